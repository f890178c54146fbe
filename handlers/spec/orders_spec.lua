-- Specs of the orders handler (handlers/orders.lua), run through
-- warren.testing the way the sidecar runs it: loaded in the sandbox, one
-- message per run, every answer of the order service faked.
--
-- Each row is a case for shop_cases.check (see spec/shop_cases.lua):
-- the event, the call the handler must make, the service's answer, and what
-- the handler must publish, reject, raise or log. To cover a new case, add a row.

local testing = require "warren.testing"
local cjson = require "cjson"
local cases = require "spec.shop_cases"

local HANDLER = "orders.lua"
local order = cases.order

-- The body POST /orders must carry for order().
local function create_body()
  local o = order()
  return { order_id = o.order_id, customer_id = o.customer_id, items = o.items, total = o.total }
end

-- The order.confirmed it must publish for order().
local CONFIRMED = { "order.confirmed", {
  order_id = "o-1", customer_id = "c-7", email = "ann@example.com",
  items = { { sku = "tea", qty = 2 } }, total = 12.5,
} }

local function created(change)
  return { id = "evt-1", type = "order.created", data = order(change) }
end

local function cancelled(data)
  return { id = "evt-2", type = "order.cancelled", data = data or { order_id = "o-1" } }
end

describe("orders handler", function()
  it("loads in the sandbox and says so in init, with the service it calls", function()
    local orders = assert(testing.load(HANDLER))
    local ctx = testing.ctx()
    assert.is_true(testing.init(orders, ctx))
    assert.equals("orders handler loaded", ctx.logs[1].msg)
    assert.same({ version = ctx.handler_version, shop = require("shop").url },
                ctx.logs[1].fields)
  end)

  describe("order.created", function()
    local rows = {
      { "confirms a new order (201)",
        event = created(), call = { "POST", "/orders", create_body() },
        answer = { status = 201, body = { order_id = "o-1", state = "created" } },
        published = { CONFIRMED },
        log = { "info", "order confirmed", { order_id = "o-1", total = 12.5 } } },
      { "confirms an order the service had already (200): downstream is per order",
        event = created(), call = { "POST", "/orders", create_body() },
        answer = { status = 200, body = { order_id = "o-1", state = "created" } },
        published = { CONFIRMED } },
      { "passes the message's idempotency key on",
        event = created(), key = "evt-1-retry-key", call = { "POST", "/orders", create_body() },
        answer = { status = 201, body = { state = "created" } },
        published = { CONFIRMED } },
      { "closes an order whose cancel came first (409): never confirmed, never charged",
        event = created(), call = { "POST", "/orders", create_body() },
        answer = { status = 409, body = { error = "cancelled",
                                          reason = "cancelled before it was created" } },
        published = { { "order.closed", { order_id = "o-1",
                                          reason = "cancelled before it was created" } } },
        log = { "warn", "order refused: cancelled before it was created", { order_id = "o-1" } } },
      { "closes it with a reason of its own when the 409 says none",
        event = created(), call = { "POST", "/orders", create_body() },
        answer = { status = 409, body = "no" },
        published = { { "order.closed", { order_id = "o-1",
                                          reason = "cancelled before it was created" } } } },
      { "does not confirm an order cancelled since it was created (200, cancelled)",
        event = created(), call = { "POST", "/orders", create_body() },
        answer = { status = 200, body = { order_id = "o-1", state = "cancelled" } },
        log = { "info", "order was cancelled already", { order_id = "o-1" } } },
      { "raises on a 503, so warren retries and nothing is published",
        event = created(), call = { "POST", "/orders", create_body() },
        answer = { status = 503, reason = "Service Unavailable" },
        raised = "http POST http://127.0.0.1:8089/orders: 503 Service Unavailable" },
      { "raises when the service cannot be reached",
        event = created(), call = { "POST", "/orders", create_body() },
        answer = { error = "Couldn't connect to server" },
        raised = "http POST http://127.0.0.1:8089/orders: Couldn't connect to server" },
      { "rejects an answer it has no rule for (400) with what the service said",
        event = created(), call = { "POST", "/orders", create_body() },
        answer = { status = 400, body = { error = "body is not JSON" } },
        rejected = 'POST /orders answered 400: {"error":"body is not JSON"}' },
    }
    for _, row in ipairs(rows) do
      it(row[1], function()
        cases.check(HANDLER, row)
      end)
    end

    -- malformed orders: rejected before any call, publishing nothing
    local invalid = {
      { "without items", function(o) o.items = {} end, "order o-1 has no items" },
      { "with no items field", function(o) o.items = nil end, "order o-1 has no items" },
      { "whose items are not a list", function(o) o.items = "tea" end, "order o-1 has no items" },
      { "with an item without a sku", function(o) o.items = { { qty = 1 } } end,
        "order o-1: item 1 needs a sku and a whole qty of at least 1" },
      { "with a zero quantity", function(o) o.items[2] = { sku = "cup", qty = 0 } end,
        "order o-1: item 2 needs a sku and a whole qty of at least 1" },
      { "with half a cup", function(o) o.items = { { sku = "cup", qty = 0.5 } } end,
        "order o-1: item 1 needs a sku and a whole qty of at least 1" },
      { "with a null item", function(o) o.items = { cjson.null } end,
        "order o-1: item 1 needs a sku and a whole qty of at least 1" },
      { "without an order_id", function(o) o.order_id = nil end, "order_id is missing" },
      { "with an empty order_id", function(o) o.order_id = "" end, "order_id is missing" },
      { "with a numeric order_id", function(o) o.order_id = 1 end, "order_id is missing" },
      { "with an order_id that is not a plain id", function(o) o.order_id = "o-1/../x" end,
        "order_id 'o-1/../x' is not a plain id (letters, digits, . _ -)" },
      { "without a customer", function(o) o.customer_id = nil end, "order o-1 has no customer_id" },
      { "with a zero total", function(o) o.total = 0 end, "order o-1 has no positive total" },
      { "with a negative total", function(o) o.total = -3 end, "order o-1 has no positive total" },
      { "with a total as text", function(o) o.total = "12.5" end,
        "order o-1 has no positive total" },
      { "with a null total", function(o) o.total = cjson.null end,
        "order o-1 has no positive total" },
    }
    for _, row in ipairs(invalid) do
      it("rejects an order " .. row[1] .. " without calling the service", function()
        cases.check(HANDLER, { event = created(row[2]), rejected = row[3] })
      end)
    end

    local not_objects = {
      { '"an order"', "the body is not a JSON object" },
      { "42", "the body is not a JSON object" },
      { "null", "the body is not a JSON object" },
      { "[1, 2]", "order_id is missing" }, -- an array is a table to Lua
    }
    for _, row in ipairs(not_objects) do
      it("rejects the JSON body " .. row[1], function()
        cases.check(HANDLER, { event = { type = "order.created", body = row[1] },
                               rejected = row[2] })
      end)
    end

    it("never sees a body that is not JSON: warren dead-letters it first", function()
      local res = cases.run(HANDLER, { event = { type = "order.created", body = "{oops" } })
      assert.equals("invalid", res.outcome)
      assert.equals("invalid-json", res.reason)
    end)

    it("publishes the same event, with the same id, when the message runs again", function()
      local row = { event = created(), call = { "POST", "/orders", create_body() },
                    answer = { status = 201, body = { state = "created" } } }
      local first, again = cases.run(HANDLER, row), cases.run(HANDLER, row)
      assert.equals("evt-1:test:1", first.published[1].message_id)
      assert.same(first.published, again.published)
      assert.equals(first.http_calls[1].headers["Idempotency-Key"],
                    again.http_calls[1].headers["Idempotency-Key"])
    end)
  end)

  describe("order.cancelled", function()
    local CANCEL = { "POST", "/orders/o-1/cancel", { reason = "too slow" } }
    local rows = {
      { "cancels a created order (200) and says so",
        event = cancelled { order_id = "o-1", reason = "too slow" }, call = CANCEL,
        answer = { status = 200, body = { order_id = "o-1", state = "cancelled" } },
        published = { { "order.cancellation.confirmed", { order_id = "o-1" } } },
        log = { "info", "order cancelled", { order_id = "o-1" } } },
      { "records a cancel that came before its order (202): nothing to confirm yet",
        event = cancelled { order_id = "o-1", reason = "too slow" }, call = CANCEL,
        answer = { status = 202, body = { order_id = "o-1", state = "cancel-recorded" } },
        log = { "warn", "cancel recorded before the order arrived", { order_id = "o-1" } } },
      { "sends no reason when the customer gave none",
        event = cancelled(), call = { "POST", "/orders/o-1/cancel", {} },
        answer = { status = 200 },
        published = { { "order.cancellation.confirmed", { order_id = "o-1" } } } },
      { "raises on a 503",
        event = cancelled { order_id = "o-1", reason = "too slow" }, call = CANCEL,
        answer = { status = 503, reason = "Service Unavailable" },
        raised = "http POST http://127.0.0.1:8089/orders/o-1/cancel: 503 Service Unavailable" },
      { "raises when the service cannot be reached",
        event = cancelled { order_id = "o-1", reason = "too slow" }, call = CANCEL,
        answer = { error = "Operation timed out after 2000 milliseconds" },
        raised = "http POST http://127.0.0.1:8089/orders/o-1/cancel: "
          .. "Operation timed out after 2000 milliseconds" },
      { "rejects an answer it has no rule for (404)",
        event = cancelled { order_id = "o-1", reason = "too slow" }, call = CANCEL,
        answer = { status = 404, body = { error = "not found" } },
        rejected = 'POST /orders/o-1/cancel answered 404: {"error":"not found"}' },
      { "rejects a cancellation without an order_id",
        event = cancelled { reason = "x" }, rejected = "order.cancelled: order_id is missing" },
      { "rejects an order_id that would change the URL",
        event = cancelled { order_id = "o 1?x=/" },
        rejected = "order.cancelled: order_id 'o 1?x=/' is not a plain id (letters, digits, . _ -)" },
      { "rejects a body that is not an object",
        event = { type = "order.cancelled", body = '"o-1"' },
        rejected = "order.cancelled: the body is not a JSON object" },
    }
    for _, row in ipairs(rows) do
      it(row[1], function()
        cases.check(HANDLER, row)
      end)
    end
  end)

  describe("other events", function()
    it("rejects an event type it does not handle", function()
      cases.check(HANDLER, { event = { type = "order.shipped", data = order() },
                             rejected = "orders does not handle events of type order.shipped" })
    end)

    it("rejects an event without a type", function()
      cases.check(HANDLER, { event = { data = order() },
                             rejected = "orders does not handle events of type nil" })
    end)
  end)
end)
