-- notifications: tells the customer that their order is confirmed.
--
-- Consumes order.confirmed events published by the orders handler. A
-- confirmation without an e-mail address cannot be sent: that is an error,
-- and the event lands in the notifications DLQ with the handler's message.

local M = {}

function M.handle(event, ctx)
  local order = event.data
  if type(order.email) ~= "string" or not order.email:find("@", 1, true) then
    error("cannot notify about order " .. tostring(order.order_id) .. ": no e-mail address")
  end
  ctx.log.info("confirmation e-mail queued", {
    order_id = order.order_id,
    to = order.email,
    idempotency_key = ctx.idempotency_key,
  })
end

return M
