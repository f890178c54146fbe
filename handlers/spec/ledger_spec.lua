-- Specs of the two ledger handlers (ledger.lua, ledger_gated.lua): ctx.store
-- in the kit keeps each order's stock and totals once per order, whatever the
-- order of its events and however often one comes again.

local testing = require "warren.testing"

describe("the ledger handlers", function()
  it("runs the order ledger once per order, whatever comes first", function()
    local ledger = assert(testing.load("ledger.lua"))
    local ctx = testing.ctx()
    local order = { order_id = "o-1", customer_id = "c-1", total = 10.5,
                    items = { { sku = "tea", qty = 2 }, { sku = "cup", qty = 1 } } }
    local function send(typ, id, data)
      return testing.run(ledger, testing.event{ id = id, type = typ, data = data }, ctx)
    end
    assert.equals("ok", send("order.created", "m-1", order).outcome)
    assert.equals("-2", ctx.stored["stock:tea"])
    assert.same({ orders = "1", total_cents = "1050" }, ctx.stored["ledger:c-1"])
    -- the same order under a new message id books nothing
    assert.equals("ok", send("order.created", "m-2", order).outcome)
    assert.equals("-2", ctx.stored["stock:tea"])
    -- the cancel puts the stock back once, however often it comes
    assert.equals("ok", send("order.cancelled", "m-3", { order_id = "o-1" }).outcome)
    assert.equals("ok", send("order.cancelled", "m-4", { order_id = "o-1" }).outcome)
    assert.equals("0", ctx.stored["stock:tea"])
    assert.equals("0", ctx.stored["stock:cup"])
    assert.same({ orders = "0", total_cents = "0" }, ctx.stored["ledger:c-1"])
    -- a cancel before its order leaves a tombstone: the order takes nothing
    assert.equals("ok", send("order.cancelled", "m-5", { order_id = "o-2" }).outcome)
    assert.equals("ok", send("order.created", "m-6",
                             { order_id = "o-2", customer_id = "c-2", total = 3,
                               items = { { sku = "tea", qty = 5 } } }).outcome)
    assert.equals("0", ctx.stored["stock:tea"])
    assert.is_nil(ctx.stored["ledger:c-2"])
    assert.equals("cancelled", ctx.stored["order:o-2"].state)
    -- a malformed order is rejected and applies nothing
    local res = send("order.created", "m-7", { order_id = "o-3", customer_id = "c-3",
                                                items = {}, total = 1 })
    assert.equals("rejected", res.outcome)
    assert.is_nil(ctx.stored["order:o-3"])
  end)

  it("runs the gated ledger in event order (a causal gate orders the cancel)", function()
    local ledger = assert(testing.load("ledger_gated.lua"))
    local ctx = testing.ctx()
    local order = { order_id = "o-1", customer_id = "c-1", total = 10.5,
                    items = { { sku = "tea", qty = 2 }, { sku = "cup", qty = 1 } } }
    local function send(typ, id, data)
      return testing.run(ledger, testing.event{ id = id, type = typ, data = data }, ctx)
    end
    assert.equals("ok", send("order.created", "m-1", order).outcome)
    assert.equals("-2", ctx.stored["stock:tea"])
    assert.same({ orders = "1", total_cents = "1050" }, ctx.stored["ledger:c-1"])
    -- the same order under a new message id books nothing
    assert.equals("ok", send("order.created", "m-2", order).outcome)
    assert.equals("-2", ctx.stored["stock:tea"])
    -- the cancel puts the stock back once, however often it comes
    assert.equals("ok", send("order.cancelled", "m-3", { order_id = "o-1" }).outcome)
    assert.equals("ok", send("order.cancelled", "m-4", { order_id = "o-1" }).outcome)
    assert.equals("0", ctx.stored["stock:tea"])
    assert.equals("0", ctx.stored["stock:cup"])
    assert.same({ orders = "0", total_cents = "0" }, ctx.stored["ledger:c-1"])
    -- no tombstone: behind its gate a cancel always finds its order, and one
    -- that does not (not ours) is refused, changing nothing
    local res = send("order.cancelled", "m-5", { order_id = "o-2" })
    assert.equals("rejected", res.outcome)
    assert.is_nil(ctx.stored["order:o-2"])
  end)
end)
