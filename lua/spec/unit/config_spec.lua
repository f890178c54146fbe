-- The kit and the real config: testing.ctx{config = ..., subscription = ...}
-- takes the key, the attempts, the delays, the store's prefix and limits from
-- the YAML as the sidecar reads it, testing.run checks each message as the
-- worker does before its handler runs, and testing.deliver returns the
-- worker's decision. All of it is asked of the warren binary (WARREN_BIN,
-- which tests/lua/run_busted.sh sets): without it these specs fail, never skip.

local cjson = require "cjson"
local testing = require "warren.testing"

local dir = os.tmpname()
os.remove(dir)
os.execute("mkdir -p " .. dir)

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

local HANDLER = write(dir .. "/refunds.lua", [[
local M = {}
function M.handle(event, ctx)
  local d = event.data
  if d.fail then error("psp down") end
  if d.later then ctx.retry("not yet", { delay = d.later }) end
  if d.bad then ctx.reject("no such order") end
  ctx.store.hincrby("customer:" .. d.customer, "refunded_cents", d.amount)
  ctx.publish("shop.events", "refund.done", { refund_id = d.refund_id, key = ctx.idempotency_key })
end
return M
]])

local CONFIG = write(dir .. "/warren.yaml", [[
amqp:
  url: amqp://guest:guest@127.0.0.1:5672/
redis:
  url: redis://127.0.0.1:6379/0
store:
  prefix: "svc:"
  max_writes: 3
subscriptions:
  - name: refunds
    queue: shop.refunds
    handler: refunds.lua
    max_body_size: 200
    handler_timeout: 250ms
    retry:
      max_attempts: 4
      delays: [5s, 30s]
    idempotency:
      key: json:refund_id
]])

local function refund(data, extra)
  local opts = { id = "m-1", type = "refund.requested", data = data }
  for k, v in pairs(extra or {}) do
    opts[k] = v
  end
  return testing.event(opts)
end

local function ctx(opts)
  opts = opts or {}
  opts.config, opts.subscription = CONFIG, "refunds"
  return testing.ctx(opts)
end

describe("the kit with the real config", function()
  local module = assert(testing.load(HANDLER))
  teardown(function()
    os.execute("rm -rf " .. dir)
  end)

  it("reads the subscription's settings as the sidecar resolves them", function()
    local s = testing.subscription(CONFIG, "refunds")
    assert.equals("shop.refunds", s.queue)
    assert.equals("shop.refunds.dlq", s.dlq)
    assert.equals(4, s.max_attempts)
    assert.equals(250, s.handler_timeout_ms)
    assert.equals("json:refund_id", s.idempotency_key)
    assert.equals("svc:", s.store_prefix)
    assert.equals(3, s.store_max_writes)
    assert.same({ "shop.refunds.retry.5s", "shop.refunds.retry.30s" }, s.retry_queues)
    local c = ctx()
    assert.equals(4, c.max_attempts)
    assert.equals("refunds", c.subscription)
    assert.equals("shop.refunds", c.queue)
    assert.equals(s.handler_version, c.handler_version)
  end)

  it("derives the key from the config and checks the message before the handler", function()
    local c = ctx()
    local res = testing.run(module, refund{ refund_id = "r-1", customer = "c-7", amount = 100 }, c)
    assert.equals("ok", res.outcome, res.error)
    assert.equals("r-1", c.idempotency_key)
    assert.equals("r-1:refunds:1", res.published[1].message_id)
    -- no refund_id: the worker dead-letters it unhandled; the handler does not run
    local ran = false
    res = testing.run({ handle = function() ran = true end },
                      refund{ customer = "c-7", amount = 100 }, c)
    assert.is_false(ran)
    assert.equals("invalid", res.outcome)
    assert.equals("missing-idempotency-key", res.reason)
    assert.equals("the body has no JSON field 'refund_id'", res.error)
    -- a body that is not JSON, a body too large
    res = testing.run(module, testing.event{ id = "m-2", body = "refund please" }, c)
    assert.equals("invalid-json", res.reason)
    res = testing.run(module, refund{ refund_id = "r-2", note = string.rep("x", 300) }, c)
    assert.equals("body-too-large", res.reason)
    assert.equals("the body is 329 bytes, more than the limit of 200", res.error)
  end)

  it("takes the store's prefix and limits from the config", function()
    local c = ctx{ store = { ["customer:c-7"] = "500" } }
    local res = testing.run(module, refund{ refund_id = "r-1", customer = "c-7", amount = 1 }, c)
    assert.equals("refused", res.commit)
    assert.matches("key svc:customer:c-7 holds a string", res.error, 1, true)
    res = testing.run({ handle = function(_, x)
      for i = 1, 4 do x.store.set("k" .. i, "v") end
    end }, refund{ refund_id = "r-3" }, c)
    assert.equals("ctx.store.set: more than 3 writes in one message (store.max_writes)",
                  res.error:match("ctx%.store.*"))
  end)

  it("delivers as the worker decides: ack, retry through the delay queue, DLQ", function()
    local c = ctx{ store = { ["customer:c-7"] = { refunded_cents = 500 } } }
    local res = testing.deliver(module, refund{ refund_id = "r-1", customer = "c-7",
                                                amount = 100 }, c)
    assert.same({ action = "ack" }, res.decision)
    assert.equals("r-1:refunds:1", res.report.published[1].message_id)
    assert.same({ ["customer:c-7"] = { refunded_cents = "600" } }, c.stored)

    res = testing.deliver(module, refund{ refund_id = "r-2", fail = true }, c)
    assert.same({ action = "retry", queue = "shop.refunds.retry.5s", delay_ms = 5000,
                  next_attempt = 2, max_attempts = 4, reason = "handler-error" }, res.decision)
    res = testing.deliver(module, refund({ refund_id = "r-2", fail = true }, { attempt = 2 }), c)
    assert.equals("shop.refunds.retry.30s", res.decision.queue)
    res = testing.deliver(module, refund({ refund_id = "r-2", fail = true }, { attempt = 4 }), c)
    assert.same({ action = "dead-letter", queue = "shop.refunds.dlq", reason = "handler-error",
                  why = "attempts exhausted" }, res.decision)
    -- ctx.retry's delay is rounded up to a delay queue
    res = testing.deliver(module, refund{ refund_id = "r-3", later = "20s" }, c)
    assert.same({ "retry", "shop.refunds.retry.30s", 30000, "retry-requested" },
                { res.decision.action, res.decision.queue, res.decision.delay_ms,
                  res.decision.reason })
    res = testing.deliver(module, refund{ refund_id = "r-4", bad = true }, c)
    assert.same({ action = "dead-letter", queue = "shop.refunds.dlq", reason = "rejected" },
                res.decision)
    -- invalid before the handler
    res = testing.deliver(module, refund{ customer = "c-7" }, c)
    assert.same({ action = "dead-letter", queue = "shop.refunds.dlq",
                  reason = "missing-idempotency-key" }, res.decision)
    res = testing.deliver(module, testing.event{ id = "m-9", body = "{" }, c)
    assert.same({ action = "dead-letter", queue = "shop.refunds.dlq", reason = "invalid-json" },
                res.decision)
  end)

  it("delivers a refused commit to the DLQ and a conflict back to the queue", function()
    local c = ctx{ store = { ["customer:c-7"] = "500",
                             ["customer:c-8"] = { refunded_cents = 1 } } }
    local res = testing.deliver(module, refund{ refund_id = "r-1", customer = "c-7",
                                                amount = 100 }, c)
    assert.same({ action = "dead-letter", queue = "shop.refunds.dlq", reason = "store-refused",
                  error = "store writes refused, nothing applied: ctx.store.hincrby: key "
                    .. "svc:customer:c-7 holds a string in Redis" }, res.decision)
    local reader = { handle = function(event, x)
      local n = tonumber(x.store.hget("customer:c-8", "refunded_cents"))
      x.store.hset("customer:c-8", "refunded_cents", n + event.data.amount)
    end }
    res = testing.deliver(reader, refund{ refund_id = "r-2", amount = 5 }, c,
                          { store_at_commit = { ["customer:c-8"] = { refunded_cents = 7 } } })
    assert.same({ action = "requeue", queue = "shop.refunds",
                  why = "store conflict: svc:customer:c-8 changed since the handler read it; "
                    .. "nothing applied, the message runs again" }, res.decision)
    res = testing.deliver(reader, refund{ refund_id = "r-2", amount = 5 }, c)
    assert.same({ action = "ack" }, res.decision)
    assert.same({ refunded_cents = "12" }, c.stored["customer:c-8"])
  end)

  it("decides as warren exec prints for the same event", function()
    local ev = { id = "m-5", type = "refund.requested", attempt = 3,
                 data = { refund_id = "r-5", fail = true } }
    local evpath = write(dir .. "/ev.json", cjson.encode(ev))
    local p = assert(io.popen(string.format("%q exec -c %q --subscription refunds --event %q "
                                            .. "--json 2>/dev/null", os.getenv("WARREN_BIN"),
                                            CONFIG, evpath)))
    local report = cjson.decode(p:read("*a"))
    p:close()
    local res = testing.deliver(module, testing.event(ev), ctx())
    assert.same(report.decision, res.decision)
  end)

  it("reads warren exec's event files: the event, its store, its fakes as exec answers",
     function()
    local path = write(dir .. "/ev.json", cjson.encode{
      id = "m-7", type = "refund.requested", attempt = 2,
      data = { refund_id = "r-7", customer = "c-7", amount = 5 },
      store = { ["customer:c-7"] = { refunded_cents = 10 }, n = 5 },
      store_at_commit = { n = cjson.null },
      http = {
        { method = "GET", url = "http://psp/a", status = 503 },
        { method = "GET", url = "http://psp/a", json = { ok = true }, reuse = true },
        { method = "GET", url = "http://psp/b", error = "connect" },
      },
    })
    local c = ctx()
    local ev, opts = testing.event_file(path, c)
    assert.equals("m-7", ev.id)
    assert.equals(2, ev.attempt)
    assert.same({ refund_id = "r-7", customer = "c-7", amount = 5 }, ev.data)
    assert.same({ ["customer:c-7"] = { refunded_cents = "10" }, n = "5" }, c.stored)
    assert.same({ store_at_commit = { n = false } }, opts)
    local seen = {}
    local res = testing.run({ handle = function(_, x)
      for i = 1, 3 do
        local r, err = x.http.request{ url = "http://psp/a", raise = false }
        seen[i] = r and (r.status .. " " .. tostring(r.json and r.json.ok)) or err
      end
      local _, err = x.http.request{ url = "http://psp/b", raise = false }
      seen[4] = err
    end }, ev, c, opts)
    assert.equals("ok", res.outcome, res.error)
    assert.same({ "503 nil", "200 true", "200 true",
                  "http GET http://psp/b: Couldn't connect to server" }, seen)
    assert.is_nil(c.stored.n) -- another message deleted it meanwhile
  end)

  it("refuses what the config decides, and ctxs without a config", function()
    assert.has_error(function()
      testing.ctx{ config = CONFIG, subscription = "refunds", max_attempts = 9 }
    end, "testing.ctx: max_attempts comes from the config (" .. CONFIG
      .. ", subscription refunds): leave it out")
    assert.has_error(function() testing.ctx{ config = CONFIG, subscription = "nope" } end,
                     "testing.subscription: warren exec -c " .. CONFIG .. " --subscription nope "
                       .. "--envelope: warren exec: no subscription 'nope' in " .. CONFIG
                       .. " (have: refunds)")
    assert.has_error(function() testing.deliver(module, refund{}, testing.ctx()) end,
                     "testing.deliver: ctx must come from testing.ctx{config = ..., "
                       .. "subscription = ...}: the decision is the config's")
    local bad = write(dir .. "/bad.yaml", (io.open(CONFIG):read("*a"):gsub("max_attempts: 4",
                                                                        'max_attempts: "4"')))
    local ok, err = pcall(testing.ctx, { config = bad, subscription = "refunds" })
    assert.is_false(ok)
    assert.matches("retry.max_attempts: expected an integer from 1 to 100, got the quoted "
                   .. 'string "4"', err, 1, true)
  end)
end)
