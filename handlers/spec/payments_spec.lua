-- Specs of the payments handler (handlers/payments.lua): it charges the
-- customer of every order.confirmed through the payment service, whose every
-- answer is faked here.
--
-- The subscription is keyed by the order (config/warren.yaml: idempotency.key
-- json:order_id), so in these cases ctx.idempotency_key is the order's id, as
-- warren sets it, and that is the Idempotency-Key the service must get.
--
-- Each row is a case for shop_cases.check (see spec/shop_cases.lua).
-- To cover a new case, add a row.

local cases = require "spec.shop_cases"

local HANDLER = "payments.lua"

local function confirmed(change)
  return { id = "evt-1:1", type = "order.confirmed", data = cases.order(change) }
end

local CHARGE = { "POST", "/payments", { order_id = "o-1", customer_id = "c-7", amount = 12.5 } }
local CAPTURED = { "payment.captured", {
  order_id = "o-1", payment_id = "pay-1", amount = 12.5, email = "ann@example.com" } }

describe("payments handler", function()
  local rows = {
    { "charges the order (201) and publishes payment.captured",
      event = confirmed(), key = "o-1", call = CHARGE,
      answer = { status = 201, body = { payment_id = "pay-1", order_id = "o-1" } },
      published = { CAPTURED },
      log = { "info", "payment captured", { order_id = "o-1", payment_id = "pay-1",
                                            amount = 12.5 } } },
    { "publishes the same capture when the service had charged it already (200)",
      event = confirmed(), key = "o-1", call = CHARGE,
      answer = { status = 200, body = { payment_id = "pay-1", order_id = "o-1" } },
      published = { CAPTURED } },
    { "publishes no e-mail address when the order has none (notifications decides)",
      event = confirmed(function(o) o.email = nil end), key = "o-1", call = CHARGE,
      answer = { status = 201, body = { payment_id = "pay-1" } },
      published = { { "payment.captured", { order_id = "o-1", payment_id = "pay-1",
                                            amount = 12.5 } } } },
    { "rejects a declined card (402): a retry would be declined again",
      event = confirmed(), key = "o-1", call = CHARGE,
      answer = { status = 402, body = { error = "card declined" } },
      rejected = "payment declined: order o-1: card declined" },
    { "rejects a decline without a JSON body with what the service said",
      event = confirmed(), key = "o-1", call = CHARGE,
      answer = { status = 402, body = "Payment Required" },
      rejected = "payment declined: order o-1: Payment Required" },
    { "raises on a 503, so warren retries and nothing is published",
      event = confirmed(), key = "o-1", call = CHARGE,
      answer = { status = 503, reason = "Service Unavailable",
                 body = { error = "payment provider timeout" } },
      raised = "http POST http://127.0.0.1:8089/payments: 503 Service Unavailable" },
    { "raises when the service cannot be reached",
      event = confirmed(), key = "o-1", call = CHARGE,
      answer = { error = "Operation timed out after 2000 milliseconds" },
      raised = "http POST http://127.0.0.1:8089/payments: "
        .. "Operation timed out after 2000 milliseconds" },
    { "rejects a capture that names no payment",
      event = confirmed(), key = "o-1", call = CHARGE,
      answer = { status = 201, body = { order_id = "o-1" } },
      rejected = 'POST /payments answered 201: {"order_id":"o-1"}' },
    { "rejects an answer it has no rule for (409)",
      event = confirmed(), key = "o-1", call = CHARGE,
      answer = { status = 409, body = "conflict" },
      rejected = "POST /payments answered 409: conflict" },
  }
  for _, row in ipairs(rows) do
    it(row[1], function()
      cases.check(HANDLER, row)
    end)
  end

  -- what cannot be charged: rejected before any call
  local invalid = {
    { "without a customer", function(o) o.customer_id = nil end,
      "cannot charge: order o-1 has no customer_id" },
    { "without a total", function(o) o.total = nil end,
      "cannot charge: order o-1 has no positive total" },
    { "with a negative total", function(o) o.total = -1 end,
      "cannot charge: order o-1 has no positive total" },
    { "without an order_id", function(o) o.order_id = nil end,
      "cannot charge: order_id is missing" },
  }
  for _, row in ipairs(invalid) do
    it("rejects an order " .. row[1] .. " without calling the service", function()
      cases.check(HANDLER, { event = confirmed(row[2]), rejected = row[3] })
    end)
  end

  it("rejects a body that is not an object", function()
    cases.check(HANDLER, { event = { type = "order.confirmed", body = "12.5" },
                           rejected = "cannot charge: the body is not a JSON object" })
  end)

  it("rejects an event it does not handle", function()
    cases.check(HANDLER, { event = { type = "order.created", data = cases.order() },
                           rejected = "payments does not handle events of type order.created" })
  end)
end)
