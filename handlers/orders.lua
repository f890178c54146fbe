-- orders: the order service's handler for order.created and order.cancelled.
--
-- A handler is a module that returns a table with handle(event, ctx) and an
-- optional init(ctx). Returning normally means "done": warren then publishes
-- what ctx.publish buffered (confirmed by the broker) and acks the message.
-- error(...) fails the message; ctx.reject(reason) fails it permanently; both
-- leave it in the subscription's dead-letter queue with the reason, never lost.

local M = {}

local handled = 0 -- module-level state lives as long as this worker's Lua state

local function validate_created(order)
  if type(order) ~= "table" then
    return "the body is not a JSON object"
  end
  if type(order.order_id) ~= "string" or order.order_id == "" then
    return "order_id is missing"
  end
  if type(order.items) ~= "table" or #order.items == 0 then
    return "order " .. order.order_id .. " has no items"
  end
  if type(order.total) ~= "number" or order.total <= 0 then
    return "order " .. order.order_id .. " has no positive total"
  end
  return nil
end

function M.init(ctx)
  ctx.log.info("orders handler loaded", { version = ctx.handler_version })
end

function M.handle(event, ctx)
  handled = handled + 1
  local order = event.data

  if event.type == "order.created" then
    local problem = validate_created(order)
    if problem then
      -- no retry can fix a malformed order: straight to the DLQ
      return ctx.reject(problem)
    end
    ctx.publish("shop.events", "order.confirmed", {
      order_id = order.order_id,
      customer_id = order.customer_id,
      email = order.email,
      total = order.total,
    }, { type = "order.confirmed" })
    ctx.log.info("order confirmed", { order_id = order.order_id, total = order.total })

  elseif event.type == "order.cancelled" then
    if type(order) ~= "table" or type(order.order_id) ~= "string" then
      return ctx.reject("order.cancelled without an order_id")
    end
    ctx.publish("shop.events", "order.closed", {
      order_id = order.order_id,
      reason = order.reason or "cancelled by the customer",
    }, { type = "order.closed" })
    ctx.log.info("order closed", { order_id = order.order_id })

  else
    ctx.reject("orders does not handle events of type " .. tostring(event.type))
  end
end

return M
