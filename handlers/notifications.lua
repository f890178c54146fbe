-- notifications: tells the customer that their order is confirmed.
--
-- Consumes order.confirmed events published by the orders handler. Two kinds
-- of failure, handled differently:
--   * the mail relay is briefly unavailable: error(...) -- warren retries the
--     event later through its delay queues (ctx.attempt counts the tries);
--   * the order has no e-mail address: no retry can fix that, so ctx.reject
--     sends it to the notifications DLQ at once, with the reason.

local M = {}

-- Stands in for a mail relay that fails now and then: addresses at
-- flaky.example fail on the first attempt. A real handler would call
-- ctx.http.request here, passing ctx.idempotency_key so the relay sends once.
local function send_mail(to, attempt)
  if to:find("@flaky.example", 1, true) and attempt == 1 then
    return nil, "mail relay unavailable"
  end
  return true
end

function M.handle(event, ctx)
  local order = event.data
  if type(order.email) ~= "string" or not order.email:find("@", 1, true) then
    return ctx.reject("cannot notify about order " .. tostring(order.order_id)
                      .. ": no e-mail address")
  end
  local ok, err = send_mail(order.email, ctx.attempt)
  if not ok then
    error(err .. " (attempt " .. ctx.attempt .. " of " .. ctx.max_attempts .. ")")
  end
  ctx.log.info("confirmation e-mail sent", {
    order_id = order.order_id,
    to = order.email,
    attempt = ctx.attempt,
    idempotency_key = ctx.idempotency_key,
  })
end

return M
