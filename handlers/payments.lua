-- payments: charges the customer of every confirmed order, once.
--
--   order.confirmed -> POST /payments {order_id, customer_id, amount}
--                      201/200: publish payment.captured (notifications
--                      e-mails the receipt);
--                      402: the card was declined, rejected to the DLQ: a
--                      retry would be declined again;
--                      5xx or no connection: raises, warren retries later.
--
-- Once, however many times the order is confirmed: config/warren.yaml keys
-- this subscription by the order (idempotency.key: json:order_id), so warren
-- runs this handler once per order, however many order.confirmed events
-- arrive for it, and ctx.idempotency_key is the order's id. The payment
-- service gets that key as Idempotency-Key: a handler that runs again (after
-- a crash, or after a timeout on a charge the provider did make) gets the
-- first payment back instead of a second charge.

local shop = require "shop"

local M = {}

-- What is wrong with an order.confirmed body, or nil.
local function problem(order)
  if type(order) ~= "table" then
    return "the body is not a JSON object"
  end
  if type(order.order_id) ~= "string" or order.order_id == "" then
    return "order_id is missing"
  end
  if type(order.customer_id) ~= "string" or order.customer_id == "" then
    return "order " .. order.order_id .. " has no customer_id"
  end
  if type(order.total) ~= "number" or order.total <= 0 then
    return "order " .. order.order_id .. " has no positive total"
  end
  return nil
end

function M.handle(event, ctx)
  if event.type ~= "order.confirmed" then
    return ctx.reject("payments does not handle events of type " .. tostring(event.type))
  end
  local order = event.data
  local bad = problem(order)
  if bad then
    return ctx.reject("cannot charge: " .. bad)
  end
  local res = ctx.http.request {
    method = "POST",
    url = shop.url .. "/payments",
    headers = { ["Idempotency-Key"] = ctx.idempotency_key },
    body = { order_id = order.order_id, customer_id = order.customer_id, amount = order.total },
    timeout = 2,
  }
  local answer = res.json or {}
  if res.status == 402 then
    return ctx.reject("payment declined: order " .. order.order_id .. ": "
                      .. tostring(answer.error or res.body))
  end
  if (res.status ~= 201 and res.status ~= 200) or type(answer.payment_id) ~= "string" then
    return ctx.reject(("POST /payments answered %d: %s"):format(res.status, res.body:sub(1, 200)))
  end
  ctx.publish(shop.exchange, "payment.captured", {
    order_id = order.order_id,
    payment_id = answer.payment_id,
    amount = order.total,
    email = order.email,
  }, { type = "payment.captured" })
  ctx.log.info("payment captured", {
    order_id = order.order_id, payment_id = answer.payment_id, amount = order.total,
  })
end

return M
