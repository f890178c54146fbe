-- The kit applies a subscription's contracts as the sidecar does: with
-- testing.ctx{config = ..., subscription = ...}, testing.run and
-- testing.deliver ask the warren binary (`warren exec --envelope`) what the
-- worker makes of an event before its handler: a schema-invalid event goes to
-- the DLQ unhandled, a v1 event reaches the handler upcast to v2 by the
-- contract's own upcaster (event.version "2", event.original_version "1"), a
-- failing upcaster is upcast-failed, an unknown version version-unknown.

local testing = require "warren.testing"

local dir = os.tmpname()
os.remove(dir)
os.execute("mkdir -p " .. dir .. "/upcasters")

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

local HANDLER = write(dir .. "/orders.lua", [[
local M = {}
function M.handle(event, ctx)
  ctx.publish("shop.events", "order.seen", { order_id = event.data.order_id,
    customer_id = event.data.customer_id, version = event.version,
    original_version = event.original_version })
end
return M
]])

write(dir .. "/contracts.yaml", [[
events:
  order.created:
    version: 2
    schema:
      type: object
      required: [order_id, customer_id]
      properties:
        customer_id: { type: string }
    backwards_compatible_with:
      - version: 1
        upcaster: upcasters/order_created_v1.lua
]])

write(dir .. "/upcasters/order_created_v1.lua", [[
return function(data, info)
  if data.fail then error("cannot upcast " .. data.order_id) end
  data.customer_id = data.customer
  data.customer = nil
  return data
end
]])

local CONFIG = write(dir .. "/warren.yaml", [[
amqp:
  url: amqp://guest:guest@127.0.0.1:5672/
redis:
  url: redis://127.0.0.1:6379/0
subscriptions:
  - name: orders
    queue: shop.orders
    handler: orders.lua
    contracts:
      file: contracts.yaml
      default_version: 1
]])

local function order(data, version)
  return testing.event{ id = "m-" .. data.order_id, type = "order.created", data = data,
                        version = version }
end

local function ctx()
  return testing.ctx{ config = CONFIG, subscription = "orders" }
end

describe("the kit with contracts and upcasters", function()
  local module = assert(testing.load(HANDLER))
  teardown(function()
    os.execute("rm -rf " .. dir)
  end)

  it("upcasts a v1 event to v2 before the handler, with the contract's upcaster", function()
    local ran
    local res = testing.run({ handle = function(event) ran = event end },
                            order{ order_id = "o-1", customer = "c-1" }, ctx())
    assert.equals("ok", res.outcome, res.error)
    assert.equals("2", ran.version)
    assert.equals("1", ran.original_version)
    assert.same({ order_id = "o-1", customer_id = "c-1" }, ran.data)
    local steps = {}
    for i, s in ipairs(res.contract.steps) do
      steps[i] = s.step .. " " .. s.from .. " -> " .. s.to .. " " .. s.result
    end
    assert.same({ "validate 1 -> 1 ok", "upcast 1 -> 2 ok", "validate 1 -> 2 ok" }, steps)

    res = testing.deliver(module, order{ order_id = "o-2", customer = "c-2" }, ctx())
    assert.equals("ack", res.decision.action)
    assert.equals("c-2", res.published[1].data.customer_id)
    assert.equals("2", res.published[1].data.version)
  end)

  it("gives a v2 event to the handler as it is, version 2", function()
    local res = testing.deliver(module, order({ order_id = "o-3", customer_id = "c-3" }, 2),
                                ctx())
    assert.equals("ack", res.decision.action)
    assert.equals("2", res.published[1].data.version)
    assert.is_nil(res.published[1].data.original_version)
  end)

  it("dead-letters what the sidecar dead-letters, without running the handler", function()
    local ran = false
    local spy = { handle = function() ran = true end }
    local res = testing.deliver(spy, order({ order_id = "o-4" }, 2), ctx())
    assert.equals("invalid", res.outcome)
    assert.equals("schema-invalid", res.reason)
    assert.equals("order.created v2: /: required: missing 'customer_id'", res.error)
    assert.same({ action = "dead-letter", queue = "shop.orders.dlq", reason = "schema-invalid" },
                res.decision)
    res = testing.deliver(spy, order{ order_id = "o-5", customer = "c-5", fail = true }, ctx())
    assert.equals("upcast-failed", res.reason)
    assert.matches("order_created_v1.lua:2: cannot upcast o-5", res.error, 1, true)
    assert.equals("dead-letter", res.decision.action)
    res = testing.deliver(spy, order({ order_id = "o-6", customer_id = "c-6" }, 3), ctx())
    assert.equals("version-unknown", res.reason)
    assert.equals("order.created v3: no contract for this version (current: v2)", res.error)
    assert.is_false(ran)
  end)
end)
