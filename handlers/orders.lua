-- orders: hands the shop's order events to the order service and tells the
-- rest of the shop what came of them.
--
--   order.created   -> POST /orders
--                      201/200: publish order.confirmed (inventory reserves
--                      the items, payments charges the customer);
--                      409: its cancel reached the service first, the order is
--                      refused: publish order.closed, never confirmed, so never
--                      charged.
--   order.cancelled -> POST /orders/<id>/cancel
--                      200: publish order.cancellation.confirmed (inventory
--                      releases the items);
--                      202: the order has not arrived yet; the service keeps
--                      the cancel and will refuse the order when it comes.
--
-- The service, not this handler, decides what a create or a cancel means: it
-- sees them in the order they really happened, whatever order the queue
-- delivered them in. Every call carries ctx.idempotency_key as its
-- Idempotency-Key, so a message that runs again (warren redelivers it after a
-- crash) gets the service's first answer and changes nothing. What no retry
-- can fix (a malformed order) is rejected to the DLQ with the reason; a
-- service that is down (5xx, no connection) raises, and warren retries later.

local shop = require "shop"

local M = {}

-- POST BODY to the order service's PATH. Transport errors and 5xx answers
-- raise (ctx.http's default): warren retries the message.
local function post(ctx, path, body)
  return ctx.http.request {
    method = "POST",
    url = shop.url .. path,
    headers = { ["Idempotency-Key"] = ctx.idempotency_key },
    body = body,
    timeout = 2,
  }
end

-- An answer the handler has no rule for (a 400, a 404): no retry would change
-- it, so the message goes to the DLQ with what the service said.
local function unexpected(ctx, path, res)
  return ctx.reject(("POST %s answered %d: %s"):format(path, res.status, res.body:sub(1, 200)))
end

-- What is wrong with the order's id, or nil. It goes into URLs, so it must be
-- a plain id.
local function id_problem(order)
  if type(order) ~= "table" then
    return "the body is not a JSON object"
  end
  local id = order.order_id
  if type(id) ~= "string" or id == "" then
    return "order_id is missing"
  end
  if not id:match("^[%w._-]+$") or #id > 64 then
    return "order_id '" .. id:sub(1, 64) .. "' is not a plain id (letters, digits, . _ -)"
  end
  return nil
end

-- What is wrong with an order.created body, or nil.
local function order_problem(order)
  local problem = id_problem(order)
  if problem then
    return problem
  end
  local id = order.order_id
  if type(order.customer_id) ~= "string" or order.customer_id == "" then
    return "order " .. id .. " has no customer_id"
  end
  if type(order.items) ~= "table" or #order.items == 0 then
    return "order " .. id .. " has no items"
  end
  for i, item in ipairs(order.items) do
    local ok = type(item) == "table" and type(item.sku) == "string"
      and type(item.qty) == "number" and item.qty >= 1 and item.qty % 1 == 0
    if not ok then
      return ("order %s: item %d needs a sku and a whole qty of at least 1"):format(id, i)
    end
  end
  if type(order.total) ~= "number" or order.total <= 0 then
    return "order " .. id .. " has no positive total"
  end
  return nil
end

local function created(order, ctx)
  local problem = order_problem(order)
  if problem then
    return ctx.reject(problem)
  end
  local id = order.order_id
  local res = post(ctx, "/orders", {
    order_id = id, customer_id = order.customer_id, items = order.items, total = order.total,
  })
  if res.status == 409 then
    local reason = res.json and res.json.reason or "cancelled before it was created"
    ctx.publish(shop.exchange, "order.closed", { order_id = id, reason = reason },
                { type = "order.closed" })
    ctx.log.warn("order refused: " .. reason, { order_id = id })
  elseif res.status == 200 and res.json and res.json.state == "cancelled" then
    -- created under another message id and cancelled since: nothing to confirm
    ctx.log.info("order was cancelled already", { order_id = id })
  elseif res.status == 201 or res.status == 200 then
    ctx.publish(shop.exchange, "order.confirmed", {
      order_id = id,
      customer_id = order.customer_id,
      email = order.email,
      items = order.items,
      total = order.total,
    }, { type = "order.confirmed" })
    ctx.log.info("order confirmed", { order_id = id, total = order.total })
  else
    return unexpected(ctx, "/orders", res)
  end
end

local function cancelled(order, ctx)
  local problem = id_problem(order)
  if problem then
    return ctx.reject("order.cancelled: " .. problem)
  end
  local id = order.order_id
  local path = "/orders/" .. id .. "/cancel"
  local res = post(ctx, path, { reason = order.reason })
  if res.status == 200 then
    ctx.publish(shop.exchange, "order.cancellation.confirmed", { order_id = id },
                { type = "order.cancellation.confirmed" })
    ctx.log.info("order cancelled", { order_id = id })
  elseif res.status == 202 then
    ctx.log.warn("cancel recorded before the order arrived", { order_id = id })
  else
    return unexpected(ctx, path, res)
  end
end

local HANDLERS = {
  ["order.created"] = created,
  ["order.cancelled"] = cancelled,
}

function M.init(ctx)
  ctx.log.info("orders handler loaded", { version = ctx.handler_version, shop = shop.url })
end

function M.handle(event, ctx)
  local handle = HANDLERS[event.type]
  if not handle then
    return ctx.reject("orders does not handle events of type " .. tostring(event.type))
  end
  return handle(event.data, ctx)
end

return M
