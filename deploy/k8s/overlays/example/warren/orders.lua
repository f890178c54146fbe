-- orders: hands order events to the order service beside warren.
--
--   order.created   -> POST /orders            201/200: publish order.accepted
--   order.cancelled -> POST /orders/<id>/cancel 200/202: nothing more to do
--
-- Every call carries ctx.idempotency_key as Idempotency-Key, so a message
-- that runs again (redelivered after a crash) gets the service's first answer.
-- A 4xx no retry can fix goes to the DLQ with what the service said; a 5xx
-- or no connection raises, and warren retries the message later (delay
-- queues), while the circuit breaker stops consumption if it lasts.

local service = require "service"

local M = {}

local function post(ctx, path, body)
  return ctx.http.request {
    method = "POST",
    url = service.url .. path,
    headers = { ["Idempotency-Key"] = ctx.idempotency_key },
    body = body,
    timeout = 2,
  }
end

function M.init(ctx)
  ctx.log.info("orders handler loaded", { service = service.url })
end

function M.handle(event, ctx)
  local order = event.data
  if type(order) ~= "table" or type(order.order_id) ~= "string"
     or not order.order_id:match("^[%w._-]+$") then
    return ctx.reject("the body has no plain order_id")
  end
  local path
  if event.type == "order.created" then
    path = "/orders"
  elseif event.type == "order.cancelled" then
    path = "/orders/" .. order.order_id .. "/cancel"
  else
    return ctx.reject("orders does not handle events of type " .. tostring(event.type))
  end
  local res = post(ctx, path, order)
  if res.status >= 400 then
    return ctx.reject(("POST %s answered %d: %s"):format(path, res.status, res.body:sub(1, 200)))
  end
  if event.type == "order.created" then
    ctx.publish(service.exchange, "order.accepted", { order_id = order.order_id },
                { type = "order.accepted" })
  end
end

return M
