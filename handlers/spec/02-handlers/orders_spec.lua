-- Specs of the example orders handler (handlers/orders.lua), run through
-- warren.testing the way the sidecar runs it: loaded in the sandbox, one
-- message per testing.run, outcomes as warren would act on them.
--
-- The validation cases are rows: to cover a new rule, add a row with what to
-- change in a valid order and the reason the handler should reject it with.

local testing = require "warren.testing"
local cjson = require "cjson"

local HANDLER = "orders.lua"

-- A valid order.created body; CHANGE(order) may alter it.
local function order(change)
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

describe("orders handler", function()
  local orders

  before_each(function()
    orders = assert(testing.load(HANDLER)) -- a fresh state for every spec
  end)

  it("loads in the sandbox and says so in init", function()
    local ctx = testing.ctx()
    assert.is_true(testing.init(orders, ctx))
    assert.equals("orders handler loaded", ctx.logs[1].msg)
    assert.equals("info", ctx.logs[1].level)
    assert.equals(ctx.handler_version, ctx.logs[1].fields.version)
    assert.matches("^%x+$", ctx.handler_version)
  end)

  describe("order.created", function()
    it("confirms a valid order: publishes order.confirmed and logs it", function()
      local res = testing.run(orders, testing.event { id = "evt-1", type = "order.created",
                                                      data = order() })
      assert.equals("ok", res.outcome, res.error)
      assert.equals(1, #res.published)
      local p = res.published[1]
      assert.equals("shop.events", p.exchange)
      assert.equals("order.confirmed", p.routing_key)
      assert.equals("order.confirmed", p.type)
      assert.equals("application/json", p.content_type)
      assert.same({ order_id = "o-1", customer_id = "c-7", email = "ann@example.com",
                    total = 12.5 }, cjson.decode(p.body))
      assert.equals("evt-1:1", p.message_id) -- same id on a re-run: downstream dedups
      assert.equals(1, #res.logs)
      assert.equals("order confirmed", res.logs[1].msg)
      assert.same({ order_id = "o-1", total = 12.5 }, res.logs[1].fields)
    end)

    it("takes the type from the routing key when the message has none", function()
      local res = testing.run(orders, testing.event { routing_key = "order.created",
                                                      data = order() })
      assert.equals("ok", res.outcome, res.error)
      assert.equals("order.confirmed", res.published[1].routing_key)
    end)

    it("publishes the same event again on a redelivery", function()
      local ev = testing.event { type = "order.created", data = order(), redelivered = true }
      local first, again = testing.run(orders, ev), testing.run(orders, ev)
      assert.same(first.published, again.published)
    end)

    local rejected = {
      { "without items", function(o) o.items = {} end, "order o-1 has no items" },
      { "with no items field", function(o) o.items = nil end, "order o-1 has no items" },
      { "whose items are not a list", function(o) o.items = "tea" end, "order o-1 has no items" },
      { "without an order_id", function(o) o.order_id = nil end, "order_id is missing" },
      { "with an empty order_id", function(o) o.order_id = "" end, "order_id is missing" },
      { "with a numeric order_id", function(o) o.order_id = 1 end, "order_id is missing" },
      { "with a zero total", function(o) o.total = 0 end, "order o-1 has no positive total" },
      { "with a negative total", function(o) o.total = -3 end, "order o-1 has no positive total" },
      { "with a total as text", function(o) o.total = "12.5" end,
        "order o-1 has no positive total" },
      { "with a null total", function(o) o.total = cjson.null end,
        "order o-1 has no positive total" },
    }
    for _, case in ipairs(rejected) do
      it("rejects an order " .. case[1] .. ", publishing nothing", function()
        local res = testing.run(orders, testing.event { type = "order.created",
                                                        data = order(case[2]) })
        assert.equals("rejected", res.outcome)
        assert.equals("rejected", res.reason)
        assert.equals(case[3], res.error)
        assert.same({}, res.published)
      end)
    end

    local not_objects = {
      { '"an order"', "the body is not a JSON object" },
      { "42", "the body is not a JSON object" },
      { "[1, 2]", "order_id is missing" }, -- an array is a table to Lua
    }
    for _, case in ipairs(not_objects) do
      it("rejects the JSON body " .. case[1], function()
        local res = testing.run(orders, testing.event { type = "order.created", body = case[1] })
        assert.equals("rejected", res.outcome)
        assert.equals(case[2], res.error)
      end)
    end

    it("never sees a body that is not JSON: warren dead-letters it first", function()
      local res = testing.run(orders, testing.event { type = "order.created", body = "{oops" })
      assert.equals("invalid", res.outcome)
      assert.equals("invalid-json", res.reason)
    end)
  end)

  describe("order.cancelled", function()
    it("closes the order with the customer's reason", function()
      local res = testing.run(orders, testing.event {
        id = "evt-2", type = "order.cancelled", data = { order_id = "o-1", reason = "too slow" } })
      assert.equals("ok", res.outcome, res.error)
      assert.equals(1, #res.published)
      local p = res.published[1]
      assert.equals("shop.events", p.exchange)
      assert.equals("order.closed", p.routing_key)
      assert.equals("order.closed", p.type)
      assert.same({ order_id = "o-1", reason = "too slow" }, p.data)
      assert.equals("evt-2:1", p.message_id)
      assert.equals("order closed", res.logs[1].msg)
      assert.same({ order_id = "o-1" }, res.logs[1].fields)
    end)

    it("gives a default reason", function()
      local res = testing.run(orders, testing.event { type = "order.cancelled",
                                                      data = { order_id = "o-1" } })
      assert.equals("ok", res.outcome, res.error)
      assert.equals("cancelled by the customer", res.published[1].data.reason)
    end)

    it("rejects a cancellation without an order_id", function()
      for _, data in ipairs { {}, { order_id = 5 }, { reason = "x" } } do
        local res = testing.run(orders, testing.event { type = "order.cancelled", data = data })
        assert.equals("rejected", res.outcome)
        assert.equals("order.cancelled without an order_id", res.error)
        assert.same({}, res.published)
      end
    end)
  end)

  describe("other events", function()
    it("rejects an event type it does not handle", function()
      local res = testing.run(orders, testing.event { type = "order.shipped", data = order() })
      assert.equals("rejected", res.outcome)
      assert.equals("orders does not handle events of type order.shipped", res.error)
      assert.same({}, res.published)
    end)

    it("rejects an event without a type", function()
      local res = testing.run(orders, testing.event { data = order() })
      assert.equals("rejected", res.outcome)
      assert.equals("orders does not handle events of type nil", res.error)
    end)
  end)
end)
