-- notifications: e-mails the customer once their payment is captured.
--
-- Consumes payment.captured events published by the payments handler. Three
-- kinds of failure, handled differently:
--   * the mail relay is briefly unavailable: error(...) -- warren retries the
--     event later through its delay queues (ctx.attempt counts the tries);
--   * the payment has no e-mail address: no retry can fix that, so ctx.reject
--     sends it to the notifications DLQ at once, with the reason;
--   * the body is not a JSON object (a string, a number, an array, null, or
--     not JSON at all): rejected the same way, before anything reads a field
--     of it, so it cannot fail on every retry.

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
  local payment = event.data
  if type(payment) ~= "table" or payment[1] ~= nil then
    return ctx.reject(tostring(event.type) .. ": the body is not a JSON object")
  end
  local email = payment.email
  if type(email) ~= "string" or not email:find("^[^@%s]+@[^@%s]+$") then
    return ctx.reject("cannot notify about order " .. tostring(payment.order_id)
                      .. ": no e-mail address")
  end
  local ok, err = send_mail(email, ctx.attempt)
  if not ok then
    error(err .. " (attempt " .. ctx.attempt .. " of " .. ctx.max_attempts .. ")")
  end
  ctx.log.info("receipt e-mail sent", {
    order_id = payment.order_id,
    payment_id = payment.payment_id,
    to = email,
    attempt = ctx.attempt,
    idempotency_key = ctx.idempotency_key,
  })
end

return M
