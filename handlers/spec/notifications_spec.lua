-- Specs of the notifications handler (handlers/notifications.lua): it
-- e-mails a receipt for every payment.captured, rejects what it cannot send
-- (no address, a body that is not a JSON object), and fails (so warren
-- retries) while the mail relay is down, which the handler stands in for with
-- addresses at flaky.example failing on their first attempt.
--
-- Each row is a case for shop_cases.check (see spec/shop_cases.lua).
-- The handler calls no service: no row has a call. To cover a new case, add a row.

local testing = require "warren.testing"
local cjson = require "cjson"
local cases = require "spec.shop_cases"

local HANDLER = "notifications.lua"

-- payment.captured as the payments handler publishes it (its id: the order's
-- id, then ":1"); CHANGE(data) may alter its body, OPTS add to the event's.
local function captured(change, opts)
  local data = { order_id = "o-1", payment_id = "pay-1", amount = 12.5,
                 email = "ann@example.com" }
  if change then
    change(data)
  end
  local ev = { id = "o-1:1", type = "payment.captured", data = data }
  for k, v in pairs(opts or {}) do
    ev[k] = v
  end
  return ev
end

local function to(address)
  return function(data)
    data.email = address
  end
end

local function sent(address, attempt)
  return { "info", "receipt e-mail sent", { order_id = "o-1", payment_id = "pay-1", to = address,
                                            attempt = attempt, idempotency_key = "o-1:1" } }
end

local NOT_AN_OBJECT = "payment.captured: the body is not a JSON object"
local NO_ADDRESS = "cannot notify about order o-1: no e-mail address"

describe("notifications handler", function()
  it("has no init and loads in the sandbox", function()
    local notifications = assert(testing.load(HANDLER))
    assert.is_nil(notifications.init)
  end)

  local rows = {
    { "sends the receipt and logs it, with the idempotency key for the relay",
      event = captured(), log = sent("ann@example.com", 1) },
    { "sends to other domains on the first attempt",
      event = captured(to("carol@example.org")), log = sent("carol@example.org", 1) },

    -- the mail relay is down: error, so warren retries
    { "fails the first attempt at a flaky relay, so warren retries it",
      event = captured(to("bob@flaky.example")),
      raised = "mail relay unavailable (attempt 1 of 5)" },
    { "says how many attempts the policy allows",
      event = captured(to("bob@flaky.example")), max_attempts = 3,
      raised = "mail relay unavailable (attempt 1 of 3)" },
    { "succeeds at the flaky relay on the second attempt",
      event = captured(to("bob@flaky.example"), { attempt = 2 }),
      log = sent("bob@flaky.example", 2) },

    -- nobody to write to: rejected, no retry could fix it
    { "rejects a payment without an e-mail address", event = captured(to(nil)),
      rejected = NO_ADDRESS },
    { "rejects an empty address", event = captured(to("")), rejected = NO_ADDRESS },
    { "rejects an address without @", event = captured(to("ann.example.com")),
      rejected = NO_ADDRESS },
    { "rejects an address with two @", event = captured(to("ann@x@example.com")),
      rejected = NO_ADDRESS },
    { "rejects a numeric address", event = captured(to(42)), rejected = NO_ADDRESS },
    { "rejects a null address", event = captured(to(cjson.null)), rejected = NO_ADDRESS },

    -- bodies that are not JSON objects: rejected with a clear reason, never retried
    { "rejects a JSON string body", event = { type = "payment.captured", body = '"hi"' },
      rejected = NOT_AN_OBJECT },
    { "rejects a JSON number body", event = { type = "payment.captured", body = "42" },
      rejected = NOT_AN_OBJECT },
    { "rejects a JSON null body", event = { type = "payment.captured", body = "null" },
      rejected = NOT_AN_OBJECT },
    { "rejects a JSON true body", event = { type = "payment.captured", body = "true" },
      rejected = NOT_AN_OBJECT },
    { "rejects a JSON array body",
      event = { type = "payment.captured", body = '[{"email": "ann@example.com"}]' },
      rejected = NOT_AN_OBJECT },
    { "rejects a body that is not JSON at all (text/plain)",
      event = { type = "payment.captured", content_type = "text/plain", body = "ann@example.com" },
      rejected = NOT_AN_OBJECT },
  }
  for _, row in ipairs(rows) do
    it(row[1], function()
      cases.check(HANDLER, row)
    end)
  end

  it("goes through as warren delivers it: attempt 1 fails, the retry copy succeeds", function()
    local notifications = assert(testing.load(HANDLER))
    local ctx = testing.ctx()
    local flaky = captured(to("bob@flaky.example"))
    local first = testing.run(notifications, testing.event(flaky), ctx)
    -- the copy that comes back from the delay queue counts its attempts in a header
    flaky.headers = { ["x-warren-attempt"] = 1 }
    local second = testing.run(notifications, testing.event(flaky), ctx)
    assert.equals("error", first.outcome)
    assert.equals("ok", second.outcome, second.error)
    assert.equals(2, second.logs[1].fields.attempt)
    assert.equals(1, #ctx.logs)
  end)
end)
