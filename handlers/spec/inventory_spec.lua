-- Specs of the inventory handler (handlers/inventory.lua): it reserves stock
-- for order.confirmed and releases it for order.cancellation.confirmed,
-- through the inventory service, whose every answer is faked here.
--
-- Each row is a case for shop_cases.check (see spec/shop_cases.lua).
-- To cover a new case, add a row.

local cases = require "spec.shop_cases"

local HANDLER = "inventory.lua"
local ITEMS = { { sku = "tea", qty = 2 } }

-- order.confirmed as the orders handler publishes it (its id: the order's
-- message id, then ":1").
local function confirmed(change)
  return { id = "evt-1:1", type = "order.confirmed", data = cases.order(change) }
end

local function cancellation(data)
  return { id = "evt-2:1", type = "order.cancellation.confirmed",
           data = data or { order_id = "o-1" } }
end

local RESERVE = { "POST", "/inventory/reserve", { order_id = "o-1", items = ITEMS } }
local RELEASE = { "POST", "/inventory/release", { order_id = "o-1" } }

describe("inventory handler", function()
  describe("order.confirmed", function()
    local rows = {
      { "reserves the items (200) and publishes inventory.reserved",
        event = confirmed(), call = RESERVE,
        answer = { status = 200, body = { order_id = "o-1", reserved = ITEMS } },
        published = { { "inventory.reserved", { order_id = "o-1", items = ITEMS } } },
        log = { "info", "stock reserved", { order_id = "o-1" } } },
      { "passes the message's idempotency key on",
        event = confirmed(), key = "evt-1:1-k", call = RESERVE, answer = { status = 200 },
        published = { { "inventory.reserved", { order_id = "o-1", items = ITEMS } } } },
      { "rejects an order out of stock (409), naming what is missing",
        event = confirmed(function(o) o.items[2] = { sku = "lamp", qty = 1 } end),
        call = { "POST", "/inventory/reserve", { order_id = "o-1", items = {
          { sku = "tea", qty = 2 }, { sku = "lamp", qty = 1 } } } },
        answer = { status = 409, body = { error = "out of stock", skus = { "lamp" } } },
        rejected = "out of stock: order o-1 needs lamp" },
      { "reserves nothing for an order whose cancellation came first (410)",
        event = confirmed(), call = RESERVE,
        answer = { status = 410, body = { error = "released" } },
        log = { "info", "order cancelled before its stock was reserved: nothing reserved",
                { order_id = "o-1" } } },
      { "raises on a 503, so warren retries",
        event = confirmed(), call = RESERVE,
        answer = { status = 503, reason = "Service Unavailable" },
        raised = "http POST http://127.0.0.1:8089/inventory/reserve: 503 Service Unavailable" },
      { "raises when the service cannot be reached",
        event = confirmed(), call = RESERVE, answer = { error = "Connection refused" },
        raised = "http POST http://127.0.0.1:8089/inventory/reserve: Connection refused" },
      { "rejects an answer it has no rule for (400)",
        event = confirmed(), call = RESERVE, answer = { status = 400, body = "bad items" },
        rejected = "POST /inventory/reserve answered 400: bad items" },
      { "rejects an order without items",
        event = confirmed(function(o) o.items = {} end),
        rejected = "order o-1 has no items to reserve" },
    }
    for _, row in ipairs(rows) do
      it(row[1], function()
        cases.check(HANDLER, row)
      end)
    end
  end)

  describe("order.cancellation.confirmed", function()
    local rows = {
      { "releases the order's stock (200) and publishes inventory.released",
        event = cancellation(), call = RELEASE,
        answer = { status = 200, body = { order_id = "o-1", released = true } },
        published = { { "inventory.released", { order_id = "o-1" } } },
        log = { "info", "stock released", { order_id = "o-1" } } },
      { "raises on a 503",
        event = cancellation(), call = RELEASE,
        answer = { status = 503, reason = "Service Unavailable" },
        raised = "http POST http://127.0.0.1:8089/inventory/release: 503 Service Unavailable" },
      { "raises when the service cannot be reached",
        event = cancellation(), call = RELEASE, answer = { error = "Connection refused" },
        raised = "http POST http://127.0.0.1:8089/inventory/release: Connection refused" },
      { "rejects an answer it has no rule for (404)",
        event = cancellation(), call = RELEASE, answer = { status = 404, body = "no route" },
        rejected = "POST /inventory/release answered 404: no route" },
    }
    for _, row in ipairs(rows) do
      it(row[1], function()
        cases.check(HANDLER, row)
      end)
    end
  end)

  local invalid = {
    { "a body that is not an object", { type = "order.confirmed", body = "[]" },
      "order.confirmed: the body is not an order (no order_id)" },
    { "an order without an id", cancellation { reason = "x" },
      "order.cancellation.confirmed: the body is not an order (no order_id)" },
    { "an event it does not handle", { type = "order.created", data = cases.order() },
      "inventory does not handle events of type order.created" },
  }
  for _, row in ipairs(invalid) do
    it("rejects " .. row[1] .. " without calling the service", function()
      cases.check(HANDLER, { event = row[2], rejected = row[3] })
    end)
  end
end)
