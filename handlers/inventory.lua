-- inventory: keeps the stock in step with the orders, through the inventory
-- service.
--
--   order.confirmed              -> POST /inventory/reserve {order_id, items}
--                                   200: publish inventory.reserved;
--                                   409: out of stock, rejected to the DLQ
--                                   (someone must decide: restock or refund);
--                                   410: the order's cancellation got here
--                                   first, nothing to reserve.
--   order.cancellation.confirmed -> POST /inventory/release {order_id}
--                                   200: publish inventory.released.
--
-- The two events come from different messages, so they can arrive in either
-- order. The service settles it: a release that finds no reservation is
-- remembered, and the reservation that comes after it is refused (410). Both
-- calls are per order and carry ctx.idempotency_key as Idempotency-Key, so
-- running one twice holds or frees the stock once. A service that is down
-- raises, and warren retries later.

local shop = require "shop"

local M = {}

-- POST BODY to the inventory service's PATH; transport errors and 5xx raise.
local function post(ctx, path, body)
  return ctx.http.request {
    method = "POST",
    url = shop.url .. path,
    headers = { ["Idempotency-Key"] = ctx.idempotency_key },
    body = body,
    timeout = 2,
  }
end

local function unexpected(ctx, path, res)
  return ctx.reject(("POST %s answered %d: %s"):format(path, res.status, res.body:sub(1, 200)))
end

local function reserve(order, ctx)
  if type(order.items) ~= "table" or #order.items == 0 then
    return ctx.reject("order " .. order.order_id .. " has no items to reserve")
  end
  local res = post(ctx, "/inventory/reserve", { order_id = order.order_id, items = order.items })
  if res.status == 200 then
    ctx.publish(shop.exchange, "inventory.reserved",
                { order_id = order.order_id, items = order.items },
                { type = "inventory.reserved" })
    ctx.log.info("stock reserved", { order_id = order.order_id })
  elseif res.status == 409 then
    local skus = res.json and type(res.json.skus) == "table" and res.json.skus or {}
    return ctx.reject("out of stock: order " .. order.order_id .. " needs "
                      .. table.concat(skus, ", "))
  elseif res.status == 410 then
    ctx.log.info("order cancelled before its stock was reserved: nothing reserved",
                 { order_id = order.order_id })
  else
    return unexpected(ctx, "/inventory/reserve", res)
  end
end

local function release(order, ctx)
  local res = post(ctx, "/inventory/release", { order_id = order.order_id })
  if res.status ~= 200 then
    return unexpected(ctx, "/inventory/release", res)
  end
  ctx.publish(shop.exchange, "inventory.released", { order_id = order.order_id },
              { type = "inventory.released" })
  ctx.log.info("stock released", { order_id = order.order_id })
end

local HANDLERS = {
  ["order.confirmed"] = reserve,
  ["order.cancellation.confirmed"] = release,
}

function M.handle(event, ctx)
  local handle = HANDLERS[event.type]
  if not handle then
    return ctx.reject("inventory does not handle events of type " .. tostring(event.type))
  end
  local order = event.data
  if type(order) ~= "table" or type(order.order_id) ~= "string" or order.order_id == "" then
    return ctx.reject(event.type .. ": the body is not an order (no order_id)")
  end
  return handle(order, ctx)
end

return M
