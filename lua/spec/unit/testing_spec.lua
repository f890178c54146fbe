-- Specs of the handler test kit, warren.testing: every public function, the
-- ctx API's argument errors (text and position), the phase rules, reject and
-- retry unwinding through pcall, timeouts, the fake clock, HTTP fakes and the
-- sandbox. That the kit and the runtime share their texts and sandbox is
-- spec/contract/contract_files_spec.lua's business.
--
-- Most cases are rows of a table (code run by a handler, and what should come
-- of it): add a row to cover a new case.

local testing = require "warren.testing"
local fixtures = require "spec.helpers.fixtures"
local cjson = require "cjson"

local E, H = testing.ERRORS, testing.HTTP_ERRORS
local fmt = string.format

-- "<path>:<line>: <text>": an error raised at the handler's line.
local function at(path, text, line)
  return fmt("%s:%d: %s", path, line or fixtures.LINE, text)
end

-- Load a handler whose handle runs BODY, and run one message through it.
local function run_body(body, ctx_opts, event_opts)
  local path = fixtures.handler(body)
  local m = assert(testing.load(path))
  local ctx = testing.ctx(ctx_opts)
  return testing.run(m, testing.event(event_opts), ctx), path, ctx
end

-- The keys of T, sorted.
local function keys(t)
  local list = {}
  for k in pairs(t) do
    list[#list + 1] = k
  end
  table.sort(list)
  return list
end

-- The message of the error F raises, without its position, and the position.
local function misuse(f)
  local ok, e = pcall(f)
  assert(not ok, "expected an error")
  local where, msg = e:match("^([^:]*:%d+): (.*)$")
  return msg or e, where
end

teardown(function()
  fixtures.cleanup()
end)

describe("testing.event", function()
  it("builds the runtime's event table with defaults", function()
    local ev = testing.event { type = "order.created", data = { order_id = "o-1" } }
    assert.matches("^test%-%d+$", ev.id)
    assert.equals("order.created", ev.type)
    assert.equals("order.created", ev.routing_key)
    assert.equals("", ev.exchange)
    assert.equals('{"order_id":"o-1"}', ev.body)
    assert.same({ order_id = "o-1" }, ev.data)
    assert.same({}, ev.headers)
    assert.is_false(ev.redelivered)
    assert.equals(1, ev.attempt)
    assert.is_nil(ev.content_type)
    assert.is_nil(ev.timestamp)
    assert.is_nil(ev.version)
  end)

  it("gives each event its own id", function()
    assert.are_not.equal(testing.event().id, testing.event().id)
  end)

  it("defaults the body to {} and leaves out an empty id", function()
    local ev = testing.event { id = "" }
    assert.is_nil(ev.id)
    assert.equals("{}", ev.body)
    assert.same({}, ev.data)
    assert.is_nil(ev.type) -- no type and no routing key: the runtime leaves it out
    assert.equals("", ev.routing_key)
  end)

  it("takes the type from the routing key", function()
    local ev = testing.event { routing_key = "order.cancelled", exchange = "shop" }
    assert.equals("order.cancelled", ev.type)
    assert.equals("shop", ev.exchange)
    ev = testing.event { routing_key = "rk", type = "order.created" }
    assert.equals("order.created", ev.type)
    assert.equals("rk", ev.routing_key)
  end)

  it("gives data as the handler would decode it from the body", function()
    local ev = testing.event { data = { a = 1, gone = nil, none = cjson.null, list = { 1, 2 } } }
    assert.same({ a = 1, none = cjson.null, list = { 1, 2 } }, ev.data)
    assert.equals(cjson.null, ev.data.none)
    ev = testing.event { body = '{"x": [true, null]}' }
    assert.same({ x = { true, cjson.null } }, ev.data)
  end)

  it("decodes the body only for JSON content types", function()
    local ev = testing.event { body = "<x/>", content_type = "application/xml" }
    assert.equals("<x/>", ev.body)
    assert.equals("application/xml", ev.content_type)
    assert.is_nil(ev.data)
    for _, ct in ipairs { "application/json", "application/json; charset=utf-8", "text/json",
                          "application/vnd.acme+json" } do
      ev = testing.event { body = "[1]", content_type = ct }
      assert.same({ 1 }, ev.data)
    end
  end)

  it("takes the version from the version header, or puts it there", function()
    assert.equals("2", testing.event { headers = { version = 2 } }.version)
    assert.equals("v3", testing.event { headers = { version = "v3" } }.version)
    local ev = testing.event { version = "7" }
    assert.equals("7", ev.version)
    assert.equals("7", ev.headers.version)
  end)

  it("counts the attempt from x-warren-attempt, like a retried message", function()
    assert.equals(3, testing.event { headers = { ["x-warren-attempt"] = 2 } }.attempt)
    assert.equals(4, testing.event { attempt = 4 }.attempt)
  end)

  it("keeps timestamp, redelivered and headers", function()
    local ev = testing.event { timestamp = 1700000000, redelivered = true,
                               headers = { tenant = "acme", nested = { a = { 1 } } } }
    assert.equals(1700000000, ev.timestamp)
    assert.is_true(ev.redelivered)
    assert.same({ tenant = "acme", nested = { a = { 1 } } }, ev.headers)
  end)

  it("refuses options it does not know, of the wrong type, or contradicting", function()
    local cases = {
      { { colour = "red" }, "testing.event: unknown option 'colour'" },
      { { id = 5 }, "testing.event: id must be a string, got number" },
      { { headers = "h" }, "testing.event: headers must be a table, got string" },
      { { attempt = 0 }, "testing.event: attempt must be an integer of at least 1, got 0" },
      { { redelivered = 1 }, "testing.event: redelivered must be a boolean, got number" },
      { { data = {}, body = "{}" }, "testing.event: pass data or body, not both" },
      { { content_type = "text/plain", data = { a = 1 } },
        "testing.event: a message of content type 'text/plain' needs a body (data is for JSON)" },
      { { data = { f = function() end } },
        "testing.event: data cannot be encoded as JSON: Cannot serialise function: type not "
          .. "supported" },
    }
    for _, case in ipairs(cases) do
      local msg, where = misuse(function() testing.event(case[1]) end)
      assert.equals(case[2], msg)
      assert.matches("testing_spec%.lua:%d+$", where) -- raised at the caller's level
    end
    assert.equals("testing.event(opts): opts must be a table, got string",
                  (misuse(function() testing.event("x") end)))
  end)
end)

describe("testing.ctx", function()
  it("has the runtime's fields and functions", function()
    local ctx = testing.ctx()
    for _, f in ipairs { "publish", "reject", "retry", "now" } do
      assert.is_function(ctx[f])
    end
    for _, level in ipairs { "debug", "info", "warn", "error" } do
      assert.is_function(ctx.log[level])
    end
    assert.is_function(ctx.http.request)
    assert.equals(require "cjson.safe", ctx.json)
    assert.equals(1, ctx.attempt)
    assert.equals(5, ctx.max_attempts)
    assert.equals("test", ctx.subscription)
    assert.equals("test", ctx.queue)
    assert.equals(0, ctx.worker)
    assert.equals("000000000000", ctx.handler_version)
    assert.matches("^%x+$", ctx.trace_id)
    assert.equals(32, #ctx.trace_id)
    assert.same({}, ctx.published)
    assert.same({}, ctx.logs)
    assert.same({}, ctx.http_calls)
  end)

  it("takes the values a spec gives", function()
    local ctx = testing.ctx { attempt = 3, max_attempts = 7, idempotency_key = "k-1",
                              trace_id = "0af7651916cd43dd8448eb211c80319c",
                              subscription = "orders", queue = "orders.q", worker = 2,
                              handler_version = "abcdefabcdef" }
    assert.equals(3, ctx.attempt)
    assert.equals(7, ctx.max_attempts)
    assert.equals("k-1", ctx.idempotency_key)
    assert.equals("0af7651916cd43dd8448eb211c80319c", ctx.trace_id)
    assert.equals("orders", ctx.subscription)
    assert.equals("orders.q", ctx.queue)
    assert.equals(2, ctx.worker)
    assert.equals("abcdefabcdef", ctx.handler_version)
  end)

  it("json is cjson.safe: nil, err instead of raising", function()
    local ctx = testing.ctx()
    local v, err = ctx.json.decode("{")
    assert.is_nil(v)
    assert.is_string(err)
    assert.equals('{"a":1}', ctx.json.encode { a = 1 })
  end)

  it("refuses options it does not know or of the wrong type", function()
    local cases = {
      { { attempts = 2 }, "testing.ctx: unknown option 'attempts'" },
      { { attempt = 1.5 }, "testing.ctx: attempt must be an integer of at least 1, got 1.5" },
      { { worker = -1 }, "testing.ctx: worker must be an integer of at least 0, got -1" },
      { { now = "today" }, "testing.ctx: now must be a number, got string" },
      { { http = 5 }, "testing.ctx: http must be a table or a function, got number" },
      { { timeout = "soon" }, "testing.ctx: timeout 'soon' is not a duration like 2s" },
      { { timeout = 0 }, "testing.ctx: timeout must be a positive number of seconds, got 0" },
      { { http = { ["http://x/"] = {} } },
        'testing.ctx: http keys are "METHOD URL" like "GET http://host/path", got '
          .. "'http://x/'" },
      { { http = { ["GET http://x/"] = { status = 42 } } },
        "testing.ctx: the fake response for GET http://x/ status must be an integer from 100 "
          .. "to 599, got 42" },
      { { http = { ["GET http://x/"] = { stauts = 200 } } },
        "testing.ctx: the fake response for GET http://x/ has an unknown field 'stauts' "
          .. "(expected status, headers, body, reason, error)" },
    }
    for _, case in ipairs(cases) do
      local msg, where = misuse(function() testing.ctx(case[1]) end)
      assert.equals(case[2], msg)
      assert.matches("testing_spec%.lua:%d+$", where)
    end
  end)

  describe("clock", function()
    it("starts at the given time and moves only when told", function()
      local ctx = testing.ctx { now = 1000.25 }
      assert.equals(1000.25, ctx.now())
      assert.equals(1000.25, ctx.now())
      assert.equals(1002.75, ctx.clock:advance(2.5))
      assert.equals(1002.75, ctx.now())
      ctx.clock:set(5)
      assert.equals(5, ctx.now())
      assert.equals(5, ctx.clock:now())
    end)

    it("starts at 2026-01-01T00:00:00Z by default", function()
      assert.equals(1767225600, testing.ctx().now())
    end)

    it("has millisecond precision, like the runtime's", function()
      local ctx = testing.ctx { now = 10.12345 }
      assert.equals(10.123, ctx.now())
      assert.equals(10.12345, ctx.clock:now())
    end)

    it("refuses to go back or to take what is not a number", function()
      local ctx = testing.ctx()
      assert.equals("clock:advance(seconds): seconds must be a number of at least 0, got -1",
                    (misuse(function() ctx.clock:advance(-1) end)))
      assert.equals("clock:advance(seconds): seconds must be a number of at least 0, got string",
                    (misuse(function() ctx.clock:advance("1s") end)))
      assert.equals("clock:set(seconds): seconds must be a number, got nil",
                    (misuse(function() ctx.clock:set() end)))
    end)

    it("is what a handler reads through ctx.now()", function()
      local path = fixtures.handler("ctx.log.info('t', { at = ctx.now() })")
      local m = assert(testing.load(path))
      local ctx = testing.ctx { now = 100 }
      testing.run(m, testing.event(), ctx)
      ctx.clock:advance(60)
      testing.run(m, testing.event(), ctx)
      assert.equals(100, ctx.logs[1].fields.at)
      assert.equals(160, ctx.logs[2].fields.at)
    end)
  end)
end)

describe("ctx.publish", function()
  it("buffers events and hands them over when the handler succeeds", function()
    local res = run_body([[
      ctx.publish("shop", "order.shipped", "plain text")
      ctx.publish("shop.audit", "order.audited", { order = { id = "m-1" } },
                  { type = "OrderAudited", headers = { tenant = "acme", n = 5, vip = true },
                    mandatory = true })
      ctx.publish("", "reply.q", "<x/>", { content_type = "application/xml" })
      ctx.publish("shop", "k", { 1, 2, 3 }, { content_type = "application/vnd.x+json" })
    ]], { idempotency_key = "evt-1" })
    assert.equals("ok", res.outcome)
    assert.is_nil(res.error)
    assert.equals(res.ctx.published, res.published)
    local p = res.published
    assert.equals(4, #p)
    assert.same({ exchange = "shop", routing_key = "order.shipped", body = "plain text",
                  headers = {}, mandatory = false, message_id = "evt-1:test:1" }, p[1])
    assert.equals("shop.audit", p[2].exchange)
    assert.equals("order.audited", p[2].routing_key)
    assert.equals('{"order":{"id":"m-1"}}', p[2].body)
    assert.same({ order = { id = "m-1" } }, p[2].data)
    assert.equals("application/json", p[2].content_type)
    assert.equals("OrderAudited", p[2].type)
    assert.same({ tenant = "acme", n = "5", vip = "true" }, p[2].headers) -- as AMQP strings
    assert.is_true(p[2].mandatory)
    assert.equals("evt-1:test:2", p[2].message_id)
    assert.equals("application/xml", p[3].content_type)
    assert.is_nil(p[3].data)
    assert.equals("", p[3].exchange)
    assert.equals("[1,2,3]", p[4].body)
    assert.equals("application/vnd.x+json", p[4].content_type)
    assert.same({ 1, 2, 3 }, p[4].data)
  end)

  it("numbers outgoing events <idempotency key>:<n>, the same on every run", function()
    local path = fixtures.handler("ctx.publish('x', 'a', 'b'); ctx.publish('x', 'c', 'd')")
    local m = assert(testing.load(path))
    local ev = testing.event { id = "evt-9" }
    local first = testing.run(m, ev)
    local again = testing.run(m, ev)
    assert.equals("evt-9:test:1", first.published[1].message_id)
    assert.equals("evt-9:test:2", first.published[2].message_id)
    assert.same(first.published, again.published)
  end)

  it("publishes nothing when the handler fails afterwards", function()
    for _, body in ipairs {
      "ctx.publish('x', 'k', 'b'); error('failed after publishing')",
      "ctx.publish('x', 'k', 'b'); ctx.reject('no')",
      "ctx.publish('x', 'k', 'b'); ctx.retry('later')",
    } do
      local res = run_body(body)
      assert.are_not.equal("ok", res.outcome)
      assert.same({}, res.published)
      assert.same({}, res.ctx.published)
    end
  end)

  it("checks its arguments in the runtime's order, with its texts, at the caller's line",
     function()
    local cases = {
      { 'ctx.publish("x", "y")', fmt(E.publish_args, 2) },
      { 'ctx.publish("x", "y", "b", {}, 5)', fmt(E.publish_args, 5) },
      { 'ctx.publish(1, "y", "b")', fmt(E.publish_exchange, "number") },
      { 'ctx.publish(1, 2, 3)', fmt(E.publish_exchange, "number") },
      { 'ctx.publish("x", nil, "b")', fmt(E.publish_routing_key, "nil") },
      { 'ctx.publish("x", "y", 5)', fmt(E.publish_body, "number") },
      { 'ctx.publish("x", "y", nil, nil)', fmt(E.publish_body, "nil") },
      { 'ctx.publish("x", "y", "b", "opts")', fmt(E.publish_opts, "string") },
      { 'ctx.publish("x", "y", { f = function() end })',
        fmt(E.publish_encode, "Cannot serialise function: type not supported") },
      { 'ctx.publish("x", "y", "b", { content_type = 5 })', E.publish_content_type },
      { 'ctx.publish("x", "y", "b", { type = true })', E.publish_type },
      { 'ctx.publish("x", "y", "b", { headers = "h" })', E.publish_headers },
      { 'ctx.publish("x", "y", "b", { headers = { n = {} } })', E.publish_header_value },
      { 'ctx.publish("x", "y", "b", { headers = { "positional" } })', E.publish_header_value },
      { 'for i = 1, 1001 do ctx.publish("x", "y", "b") end', fmt(E.publish_limit, 1000) },
      { 'ctx.publish(string.rep("x", 256), "y", "b")', fmt(E.publish_long, "exchange", 256) },
      { 'ctx.publish("x", string.rep("y", 300), "b")', fmt(E.publish_long, "routing_key", 300) },
      { 'ctx.publish("x", "y", "b", { type = string.rep("t", 256) })',
        fmt(E.publish_long, "opts.type", 256) },
      { 'ctx.publish("x", "y", "b", { content_type = string.rep("t", 257) })',
        fmt(E.publish_long, "opts.content_type", 257) },
      { 'ctx.publish("x", "y", "b", { headers = { [string.rep("h", 256)] = 1 } })',
        fmt(E.publish_long, "a name in opts.headers", 256) },
      { 'local h = {} for i = 1, 70 do h["h" .. i] = string.rep("v", 1000) end '
        .. 'ctx.publish("x", "y", "b", { headers = h })', fmt(E.publish_headers_big, 65536) },
      { 'local s = string.rep("x", 6 * 1024 * 1024) for i = 1, 3 do ctx.publish("x", "y", s) end',
        fmt(E.publish_too_big, 16 * 1024 * 1024) },
    }
    for _, case in ipairs(cases) do
      local res, path = run_body(case[1])
      assert.equals("error", res.outcome)
      assert.equals("handler-error", res.reason)
      assert.equals(at(path, case[2]), res.error)
    end
  end)

  it("accepts nil opts and a publish with opts = nil", function()
    local res = run_body('ctx.publish("x", "y", "b", nil)')
    assert.equals("ok", res.outcome)
    assert.equals(1, #res.published)
  end)

  it("drops a publish whose options are wrong even when the error is caught", function()
    local res = run_body([[
      local ok = pcall(ctx.publish, "x", "bad", "b", { headers = { n = {} } })
      assert(not ok)
      ctx.publish("x", "good", "b")
    ]])
    assert.equals("ok", res.outcome)
    assert.equals(1, #res.published)
    assert.equals("good", res.published[1].routing_key)
  end)

  it("is not available outside a handler call", function()
    local ctx = testing.ctx()
    local msg, where = misuse(function() ctx.publish("x", "y", "b") end)
    assert.equals("ctx.publish is not available outside a handler call", msg)
    assert.matches("testing_spec%.lua:%d+$", where)
    assert.equals(fmt(E.phase, "reject", E.phase_none), (misuse(function() ctx.reject("r") end)))
    assert.equals(fmt(E.phase, "retry", E.phase_none), (misuse(function() ctx.retry("r") end)))
  end)
end)

describe("ctx.reject and ctx.retry", function()
  it("reject fails the message for good with the reason", function()
    local res = run_body("ctx.reject('order has no items'); error('not reached')")
    assert.equals("rejected", res.outcome)
    assert.equals("rejected", res.reason)
    assert.equals("order has no items", res.error)
    assert.is_nil(res.delay)
  end)

  it("win even when the handler catches the unwinding", function()
    local cases = {
      { [[
        local ok, e = pcall(ctx.reject, "caught but still rejected")
        assert(not ok and type(e) == "userdata")
        local ok2 = pcall(function() ctx.reject("inner") end)
        return "normal return"
      ]], "rejected", "inner" }, -- the last call wins
      { "pcall(ctx.reject, 'rejected first'); error('then failed')", "rejected", "rejected first" },
      { "pcall(ctx.retry, 'asked', { delay = '1s' }); return", "retry", "asked" },
      { "xpcall(function() ctx.reject('x') end, function(e) return e end)", "rejected", "x" },
    }
    for _, case in ipairs(cases) do
      local res = run_body(case[1])
      assert.equals(case[2], res.outcome)
      assert.equals(case[3], res.error)
    end
  end)

  it("retry asks for a retry, after the delay given or the policy's", function()
    local cases = {
      { "ctx.retry('stock service down', { delay = '5s' })", 5000 },
      { "ctx.retry('later', { delay = 250 })", 250 },
      { "ctx.retry('later', { delay = 250.9 })", 250 },
      { "ctx.retry('sum', { delay = '1m30s' })", 90000 },
      { "ctx.retry('zero', { delay = '0' })", 0 },
      { "ctx.retry('soon')", nil },
      { "ctx.retry('soon', {})", nil },
    }
    for _, case in ipairs(cases) do
      local res = run_body(case[1])
      assert.equals("retry", res.outcome)
      assert.equals("retry-requested", res.reason)
      assert.equals(case[2], res.delay)
    end
  end)

  it("check their arguments with the runtime's texts", function()
    local cases = {
      { "ctx.reject(42)", fmt(E.reject_reason, "number") },
      { "ctx.reject()", fmt(E.reject_reason, "no value") },
      { "ctx.reject(nil)", fmt(E.reject_reason, "nil") },
      { "ctx.retry()", fmt(E.retry_reason, "no value") },
      { "ctx.retry({})", fmt(E.retry_reason, "table") },
      { "ctx.retry('r', 5)", fmt(E.retry_opts, "number") },
      { "ctx.retry('r', { delay = '5 parsecs' })", fmt(E.retry_delay, "5 parsecs") },
      { "ctx.retry('r', { delay = '' })", fmt(E.retry_delay, "") },
      { "ctx.retry('r', { delay = true })", E.retry_delay_type },
      { "ctx.retry('r', { delay = -5 })", fmt(E.retry_delay_range, "-5") },
      { "ctx.retry('r', { delay = 0/0 })", fmt(E.retry_delay_range, tostring(0/0)) },
      { "ctx.retry('r', { delay = math.huge })", fmt(E.retry_delay_range, "inf") },
    }
    for _, case in ipairs(cases) do
      local res, path = run_body(case[1])
      assert.equals("error", res.outcome)
      assert.equals(at(path, case[2]), res.error)
      assert.is_nil(res.delay)
    end
  end)

  it("do not leak into the next message", function()
    local path = fixtures.handler("if event.data.reject then ctx.reject('no') end")
    local m = assert(testing.load(path))
    local ctx = testing.ctx()
    assert.equals("rejected", testing.run(m, testing.event { data = { reject = true } }, ctx).outcome)
    assert.equals("ok", testing.run(m, testing.event(), ctx).outcome)
  end)
end)

describe("ctx.log", function()
  it("records level, message, fields and the handler's line", function()
    local res, path = run_body([[ctx.log.info("order confirmed", { order_id = "o-1", total = 5 })
      ctx.log.debug(42)
      ctx.log.warn("w")
      ctx.log.error("e", nil)]])
    assert.equals("ok", res.outcome)
    assert.same({ level = "info", msg = "order confirmed", fields = { order_id = "o-1", total = 5 },
                  source = path .. ":3" }, res.logs[1])
    assert.same({ level = "debug", msg = "42", source = path .. ":4" }, res.logs[2])
    assert.equals("warn", res.logs[3].level)
    assert.equals("error", res.logs[4].level)
    assert.same(res.logs, res.ctx.logs)
  end)

  it("keeps the fields as they were when logged", function()
    local res = run_body("local f = { n = 1 }; ctx.log.info('m', f); f.n = 2")
    assert.equals(1, res.logs[1].fields.n)
  end)

  it("notes fields that cannot be encoded, like the runtime's log line", function()
    local res = run_body("ctx.log.info('m', { f = function() end })")
    assert.equals("ok", res.outcome)
    assert.is_nil(res.logs[1].fields)
    assert.equals("Cannot serialise function: type not supported", res.logs[1].fields_error)
  end)

  it("checks its arguments with the runtime's texts", function()
    local cases = {
      { "ctx.log.info({})", fmt(E.log_msg, "info", "table") },
      { "ctx.log.warn()", fmt(E.log_msg, "warn", "no value") },
      { "ctx.log.error('msg', 5)", fmt(E.log_fields, "error", "number") },
      { "ctx.log.debug('msg', 'f')", fmt(E.log_fields, "debug", "string") },
    }
    for _, case in ipairs(cases) do
      local res, path = run_body(case[1])
      assert.equals("error", res.outcome)
      assert.equals(at(path, case[2]), res.error)
    end
  end)

  it("works in init and outside a handler call, and accumulates on the ctx", function()
    local path = fixtures.handler("ctx.log.info('handled')", "ctx.log.info('loaded')")
    local m = assert(testing.load(path))
    local ctx = testing.ctx()
    assert.is_true(testing.init(m, ctx))
    local res = testing.run(m, testing.event(), ctx)
    ctx.log.warn("from the spec")
    assert.same({ "loaded", "handled", "from the spec" },
                { ctx.logs[1].msg, ctx.logs[2].msg, ctx.logs[3].msg })
    assert.equals(1, #res.logs) -- a run's result holds its own lines
  end)
end)

describe("testing.run", function()
  it("reports errors as the runtime does: the first line, with the handler's position", function()
    local cases = {
      { "error('boom')", function(p) return at(p, "boom") end },
      { "error({ code = 1 })", function() return fmt(E.error_object, "table") end },
      { "error(nil)", function() return E.error_nil end },
      { "error(true)", function() return fmt(E.error_object, "boolean") end },
      { "error(42)", function(p) return at(p, "42") end },
      { "error('no position', 0)", function() return "no position" end },
      { "error('first line\\nsecond line')", function(p) return at(p, "first line") end },
      { "local t = nil; return t.x", function(p) return at(p, "attempt to index local 't' (a nil value)") end },
      { "coroutine.yield()", function(p) return at(p, "attempt to yield across C-call boundary") end },
    }
    for _, case in ipairs(cases) do
      local res, path = run_body(case[1])
      assert.equals("error", res.outcome)
      assert.equals("handler-error", res.reason)
      assert.equals(case[2](path), res.error)
    end
  end)

  it("reports a stack overflow as an error", function()
    local res = run_body("local function f(n) return 1 + f(n + 1) end; return f(1)")
    assert.equals("error", res.outcome)
    assert.matches("stack overflow", res.error)
  end)

  it("gives the handler its own copy of the event", function()
    local path = fixtures.handler("event.data.touched = true; event.headers.x = 1")
    local m = assert(testing.load(path))
    local ev = testing.event { data = { a = 1 } }
    local res = testing.run(m, ev)
    assert.is_nil(ev.data.touched)
    assert.is_nil(ev.headers.x)
    assert.is_true(res.event.data.touched)
  end)

  it("sets the per-message ctx fields from the event", function()
    local res = run_body("ctx.log.info('m', { a = ctx.attempt, e = event.attempt, k = ctx.idempotency_key, "
                         .. "m = ctx.message_id, t = ctx.trace_id })", nil,
                         { id = "evt-5", attempt = 2, headers = {
                           traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" } })
    assert.same({ a = 2, e = 2, k = "evt-5", m = "evt-5", t = "0af7651916cd43dd8448eb211c80319c" },
                res.logs[1].fields)
  end)

  it("lets the ctx's attempt and key win over the event's", function()
    local res = run_body("ctx.log.info('m', { a = ctx.attempt, e = event.attempt, k = ctx.idempotency_key })",
                         { attempt = 3, idempotency_key = "order-7" }, { id = "evt-1", attempt = 1 })
    assert.same({ a = 3, e = 3, k = "order-7" }, res.logs[1].fields)
  end)

  it("gives the loaded handler's version", function()
    local path = fixtures.handler("ctx.log.info('v', { v = ctx.handler_version })")
    local fh = assert(io.open(path, "rb"))
    local want = testing.version(fh:read("*a"))
    fh:close()
    local res = testing.run(assert(testing.load(path)), testing.event())
    assert.equals(want, res.logs[1].fields.v)
    assert.matches("^%x%x%x%x%x%x%x%x%x%x%x%x$", want)
  end)

  it("hashes like the runtime (FNV-1a, 48 bits)", function()
    assert.equals("9ce484222325", testing.version("")) -- the offset basis' low 48 bits
    assert.equals("a2190541574b", testing.version("abc"))
  end)

  it("does not run the handler on a message the sidecar would dead-letter", function()
    local path = fixtures.handler("error('must not run')")
    local m = assert(testing.load(path))
    local res = testing.run(m, testing.event { body = '{"mode": oops' })
    assert.equals("invalid", res.outcome)
    assert.equals("invalid-json", res.reason)
    assert.matches("^the body is not valid JSON: ", res.error)
    res = testing.run(m, testing.event { body = "" })
    assert.equals("invalid", res.outcome)
    assert.equals("empty-body", res.reason)
    assert.equals(E.empty_body, res.error)
    res = testing.run(m, testing.event { body = "not json", content_type = "text/plain" })
    assert.equals("error", res.outcome) -- not JSON, so not decoded: the handler runs
  end)

  it("runs any table with a handle function, and makes a ctx when none is given", function()
    local res = testing.run({ handle = function(event, ctx) ctx.publish("x", "k", event.data) end },
                            testing.event { data = { a = 1 } })
    assert.equals("ok", res.outcome)
    assert.same({ a = 1 }, res.published[1].data)
  end)

  it("refuses what is not a handler, an event or a kit ctx", function()
    assert.equals("testing.run(module, event, ctx): module must be a table with a function "
                  .. "'handle', got table", (misuse(function() testing.run({}, {}) end)))
    assert.equals("testing.run(module, event, ctx): event must be a table, got nil",
                  (misuse(function() testing.run({ handle = print }) end)))
    assert.equals("testing.run: ctx must come from testing.ctx{...}, got table",
                  (misuse(function() testing.run({ handle = print }, {}, {}) end)))
  end)

  describe("timeouts", function()
    it("stops a handler that runs past its deadline", function()
      local res, path = run_body("while true do end", { timeout = "100ms" })
      assert.equals("timeout", res.outcome)
      assert.equals("timeout", res.reason)
      assert.equals(at(path, fmt(E.timeout, 100)), res.error)
    end)

    it("cannot be caught with pcall", function()
      local res = run_body([[
        pcall(function() while true do end end)
        while true do end]], { timeout = 0.1 })
      assert.equals("timeout", res.outcome)
      assert.matches("handler timed out after 100 ms$", res.error)
    end)

    it("leaves no hook behind and the JIT as it was", function()
      run_body("while true do end", { timeout = "50ms" })
      assert.is_nil(debug.gethook())
      if jit then
        assert.is_true((jit.status()))
      end
      local n = 0
      for i = 1, 1e6 do n = n + i end -- and the spec itself runs on undisturbed
      assert.equals(500000500000, n)
    end)
  end)
end)

describe("testing.load", function()
  it("returns the module of a handler file", function()
    local m = assert(testing.load(fixtures.handler("")))
    assert.is_function(m.handle)
  end)

  it("refuses a path that is not a string and options it does not know", function()
    assert.equals("testing.load(path [, opts]): path must be a string, got nil",
                  (misuse(function() testing.load() end)))
    assert.equals("testing.load: unknown option 'init'",
                  (misuse(function() testing.load("orders.lua", { init = true }) end)))
    assert.equals("testing.load: timeout must be a positive number of seconds, got -1",
                  (misuse(function() testing.load("orders.lua", { timeout = -1 }) end)))
  end)

  it("gives each load its own state: module-level locals live as long as it", function()
    local path = fixtures.file("counter.lua", [[
      local n = 0
      return { handle = function(event, ctx) n = n + 1; ctx.log.info("n", { n = n }) end }
    ]])
    local m = assert(testing.load(path))
    local ctx = testing.ctx()
    testing.run(m, testing.event(), ctx)
    testing.run(m, testing.event(), ctx)
    assert.equals(2, ctx.logs[2].fields.n)
    local fresh = assert(testing.load(path))
    assert.equals(1, testing.run(fresh, testing.event()).logs[1].fields.n)
  end)

  it("reports what the sidecar reports for a handler it cannot load", function()
    local missing = fixtures.dir() .. "/nope.lua"
    local cases = {
      { missing, fmt(E.load_open, missing, "handler", "No such file or directory") },
      { fixtures.file("syntax.lua", "return {\n  = 1\n}\n"),
        function(p) return p .. ":2: unexpected symbol near '='" end },
      { fixtures.file("number.lua", "return 42\n"),
        function(p) return fmt(E.load_not_table, p, "number") end },
      { fixtures.file("nohandle.lua", "return { handler = function() end }\n"),
        function(p) return fmt(E.load_no_handle, p, "nil") end },
      { fixtures.file("badinit.lua", "return { handle = function() end, init = true }\n"),
        function(p) return fmt(E.load_init_type, p, "boolean") end },
      { fixtures.file("boom.lua", "error('module body failed')\n"),
        function(p) return p .. ":1: module body failed" end },
      { fixtures.file("global.lua", "x = 1\nreturn {}\n"),
        function(p) return p .. ":1: attempt to create global 'x' (handler globals are locked: "
                              .. "declare it local)" end },
      { fixtures.file("bytecode.lua", string.dump(function() return {} end)),
        function(p) return fmt(E.load_bytecode, p) end },
      { fixtures.file("loop.lua", "while true do end\n"),
        function(p) return p .. ":1: " .. fmt(E.timeout, 100) end },
    }
    for _, case in ipairs(cases) do
      local m, err = testing.load(case[1], { timeout = "100ms" })
      assert.is_nil(m)
      local want = type(case[2]) == "function" and case[2](case[1]) or case[2]
      assert.equals(want, err)
    end
  end)

  describe("sandbox", function()
    it("has no forbidden globals and locks the globals", function()
      local cases = {
        { "os.execute('true')", "attempt to call field 'execute' (a nil value)" },
        { "os.exit(1)", "attempt to call field 'exit' (a nil value)" },
        { "os.getenv('HOME')", "attempt to call field 'getenv' (a nil value)" },
        { "io.open('/etc/passwd')", "attempt to read undeclared global 'io'" },
        { "debug.traceback()", "attempt to read undeclared global 'debug'" },
        { "package.loadlib('x', 'y')", "attempt to read undeclared global 'package'" },
        { "dofile('x')", "attempt to read undeclared global 'dofile'" },
        { "loadfile('x')", "attempt to read undeclared global 'loadfile'" },
        { "string.dump(function() end)", "attempt to call field 'dump' (a nil value)" },
        { "local s = ''; s:dump()", "attempt to call method 'dump' (a nil value)" },
        { "setfenv(1, {})", "attempt to read undeclared global 'setfenv'" },
        { "getfenv(1)", "attempt to read undeclared global 'getfenv'" },
        { "collectgarbage()", "attempt to read undeclared global 'collectgarbage'" },
        { "jit.off()", "attempt to read undeclared global 'jit'" },
        { "print('x')", "attempt to read undeclared global 'print'" },
        { "setmetatable(_G, {})", "cannot change a protected metatable" },
        { "x = 1", "attempt to create global 'x' (handler globals are locked: declare it local)" },
        { "_G.y = 1", "attempt to create global 'y' (handler globals are locked: declare it local)" },
        { "rawset(_G, 'z', 1)", "attempt to create global 'z' (handler globals are locked: declare it local)" },
        { "local v = undeclared_thing", "attempt to read undeclared global 'undeclared_thing'" },
        { "local ffi = require('ffi')", function(p)
            return fmt("module 'ffi' not found: no %s/ffi.lua (handlers may require Lua modules "
                       .. "from their directory, and cjson)", p:match("^(.*)/")) end },
        { "require(42)", "require: module name must be a string" },
        { "require('../etc/passwd')", "require: bad module name '../etc/passwd'" },
      }
      for _, case in ipairs(cases) do
        local res, path = run_body(case[1])
        assert.equals("error", res.outcome)
        local want = type(case[2]) == "function" and case[2](path) or case[2]
        assert.equals(at(path, want), res.error)
      end
    end)

    it("loads only source text, and runs it in the sandbox", function()
      local cases = {
        { "assert(load('\\27LJ'))", "load: precompiled bytecode is not allowed in handlers" },
        { "assert(loadstring('\\27Lua'))", "load: precompiled bytecode is not allowed in handlers" },
        { "assert(load(function() end))", "load: only source text is accepted (got function)" },
        { "assert(load('return io'))()", "[string \"return io\"]:1: attempt to read undeclared global 'io'" },
      }
      for _, case in ipairs(cases) do
        local res, path = run_body(case[1])
        assert.equals("error", res.outcome)
        local want = case[2]:sub(1, 1) == "[" and case[2] or at(path, case[2])
        assert.equals(want, res.error)
      end
    end)

    it("has the whitelisted globals, the real ones", function()
      local res = run_body([[
        assert(type(assert) == "function" and type(pcall) == "function")
        local ok, e = pcall(assert, false, "plain assert")
        assert(e == "plain assert", "the builtin assert, not busted's")
        assert(string.format("%d", 3) == "3" and table.concat({ 1, 2 }) == "12")
        assert(math.floor(1.5) == 1 and bit.band(3, 1) == 1)
        assert(os.time() and os.clock() and os.date("!%Y", 0) == "1970" and os.difftime(2, 1) == 1)
        assert(coroutine.wrap(function() coroutine.yield(1) end)() == 1)
        assert(select("#", unpack({ 1, 2 })) == 2 and _VERSION and rawequal(_G, _G))
        assert(xpcall(function() return true end, error))
        local ok2, r = xpcall(function() error("x", 0) end, function(m) return "handled " .. m end)
        assert(not ok2 and r == "handled x")
        assert(("abc"):upper() == "ABC")
      ]])
      assert.equals("ok", res.outcome, res.error)
    end)

    it("requires Lua modules from the handler's directory, once, and cjson", function()
      fixtures.file("helper.lua", "local H = { loads = 0 }\nH.loads = H.loads + 1\n"
                                  .. "function H.double(x) return 2 * x end\nreturn H\n")
      fixtures.file("lib/util.lua", "return { shout = function(s) return s:upper() .. '!' end }\n")
      local res = run_body([[
        local helper, util = require "helper", require "lib.util"
        assert(helper.double(21) == 42 and util.shout("hi") == "HI!")
        assert(require("helper") == helper and helper.loads == 1)
        assert(require("cjson").encode({ 1, 2 }) == "[1,2]")
        assert(require("cjson.safe").decode("{") == nil)
      ]])
      assert.equals("ok", res.outcome, res.error)
      local path
      res, path = run_body("local m = require 'nope'")
      assert.equals(at(path, fmt("module 'nope' not found: no %s/nope.lua (handlers may require "
                                 .. "Lua modules from their directory, and cjson)",
                                 fixtures.dir())), res.error)
    end)
  end)
end)

describe("testing.init", function()
  it("runs init with an init-phase ctx", function()
    local path = fixtures.handler("", [[ctx.log.info("loaded", { v = ctx.handler_version,
      attempt = ctx.attempt, key = ctx.idempotency_key, sub = ctx.subscription })]])
    local m = assert(testing.load(path))
    local ctx = testing.ctx { subscription = "orders", attempt = 2 }
    assert.is_true(testing.init(m, ctx))
    local f = ctx.logs[1].fields
    assert.equals("orders", f.sub)
    assert.is_nil(f.attempt) -- no message yet: the per-message fields are not there
    assert.is_nil(f.key)
    assert.matches("^%x+$", f.v)
    assert.equals(2, ctx.attempt) -- and they are back afterwards
  end)

  it("refuses the message-only functions in init", function()
    for _, fn in ipairs { "publish('x', 'y', 'b')", "reject('r')", "retry('r')",
                          "http.request{ url = 'http://x/' }" } do
      local path = fixtures.handler("", "ctx." .. fn)
      local ok, err = testing.init(assert(testing.load(path)))
      assert.is_nil(ok)
      assert.equals(fmt(E.init_failed, at(path, fmt(E.phase, fn:match("^[%w.]+"), E.phase_init), 6)),
                    err)
    end
  end)

  it("reports a failing init as the sidecar does", function()
    local path = fixtures.handler("", "error('no config')")
    local ok, err = testing.init(assert(testing.load(path)), testing.ctx())
    assert.is_nil(ok)
    assert.equals("init failed: " .. path .. ":6: no config", err)
  end)

  it("is a no-op for a handler without init", function()
    assert.is_true(testing.init(assert(testing.load(fixtures.handler("")))))
  end)
end)

describe("ctx.http.request", function()
  local URL = "http://127.0.0.1:8080/payments"

  it("answers from a fake keyed by method and url, and records the request", function()
    local res = run_body([[
      local res = ctx.http.request{ method = "POST", url = "http://127.0.0.1:8080/payments",
        headers = { ["Idempotency-Key"] = ctx.idempotency_key, ["X-N"] = 5 },
        body = { amount = 10 }, timeout = "2s" }
      ctx.log.info("paid", { status = res.status, id = res.json.id, ct = res.headers["content-type"],
                             body = res.body })
    ]], { http = { ["POST " .. URL] = { status = 201, headers = { ["Content-Type"] = "application/json" },
                                        body = '{"id":"pay-1"}' } } }, { id = "evt-3" })
    assert.equals("ok", res.outcome, res.error)
    assert.same({ status = 201, id = "pay-1", ct = "application/json", body = '{"id":"pay-1"}' },
                res.logs[1].fields)
    assert.same({ { method = "POST", url = URL, body = { amount = 10 },
                    body_text = '{"amount":10}', timeout = 2, raise = true,
                    headers = { ["Idempotency-Key"] = "evt-3", ["X-N"] = "5",
                                ["Content-Type"] = "application/json",
                                traceparent = "00-" .. res.ctx.trace_id .. "-0000000000000003-01" } } },
                res.http_calls)
    assert.same(res.http_calls, res.ctx.http_calls)
  end)

  it("defaults to GET, status 200, an empty body and no json", function()
    local res = run_body([[
      local res = ctx.http.request{ url = "https://example.test/x" }
      ctx.log.info("r", { status = res.status, body = res.body, json = res.json == nil })
    ]], { http = { ["GET https://example.test/x"] = {} } })
    assert.same({ status = 200, body = "", json = true }, res.logs[1].fields)
    assert.is_nil(res.http_calls[1].timeout)
    assert.same({ "traceparent" }, keys(res.http_calls[1].headers))
  end)

  it("keeps a Content-Type the handler gave, and sends a string body as it is", function()
    local res = run_body([[
      ctx.http.request{ method = "PUT", url = "http://x/a", body = { a = 1 },
                        headers = { ["content-type"] = "application/merge-patch+json" } }
      ctx.http.request{ method = "POST", url = "http://x/b", body = "raw", timeout = 1.5 }
    ]], { http = function() return { status = 204 } end })
    assert.equals("ok", res.outcome, res.error)
    assert.same({ "content-type", "traceparent" }, keys(res.http_calls[1].headers))
    assert.equals("application/merge-patch+json", res.http_calls[1].headers["content-type"])
    assert.same({ a = 1 }, res.http_calls[1].body) -- as the handler gave it
    assert.equals('{"a":1}', res.http_calls[1].body_text) -- as sent
    assert.equals("raw", res.http_calls[2].body)
    assert.equals("raw", res.http_calls[2].body_text)
    assert.same({ "traceparent" }, keys(res.http_calls[2].headers))
    assert.equals(1.5, res.http_calls[2].timeout)
  end)

  it("sends the message's trace along, unless the handler sets a traceparent", function()
    local mine = "00-11111111111111111111111111111111-2222222222222222-01"
    local res = run_body([[
      ctx.http.request{ url = "http://x/a" }
      ctx.http.request{ url = "http://x/b" }
      ctx.http.request{ url = "http://x/c", headers = { TraceParent = "]] .. mine .. [[" } }
    ]], { http = function() return {} end }, { headers = {
      traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" } })
    local a, b = res.http_calls[1].headers.traceparent, res.http_calls[2].headers.traceparent
    assert.matches("^00%-0af7651916cd43dd8448eb211c80319c%-%x+%-01$", a)
    assert.are_not.equal(a, b) -- a new span each time
    assert.same({ TraceParent = mine }, res.http_calls[3].headers)
  end)

  it("takes a function as a fake, per request or for all", function()
    local seen
    local res = run_body([[
      local a = ctx.http.request{ url = "http://x/a" }
      local b = ctx.http.request{ url = "http://x/b?q=1" }
      ctx.log.info("r", { a = a.json.n, b = b.body })
    ]], { http = {
      ["GET http://x/a"] = function(req) seen = req; return { body = { n = 1 } } end,
      ["GET http://x/b?q=1"] = { body = "plain", headers = { ["Content-Type"] = "text/plain" } },
    } })
    assert.equals("ok", res.outcome, res.error)
    assert.same({ a = 1, b = "plain" }, res.logs[1].fields)
    assert.equals("http://x/a", seen.url)
  end)

  it("raises on 5xx and transport errors by default: the message is retried", function()
    local cases = {
      { { status = 503 }, fmt(H.status, "POST", URL, 503) },
      { { status = 502, reason = "Bad Gateway" }, fmt(H.status_reason, "POST", URL, 502, "Bad Gateway") },
      { { error = "connection refused" }, fmt(H.transport, "POST", URL, "connection refused") },
    }
    for _, case in ipairs(cases) do
      local res, path = run_body("ctx.http.request{ method = 'POST', url = '" .. URL .. "' }",
                                 { http = { ["POST " .. URL] = case[1] } })
      assert.equals("error", res.outcome)
      assert.equals(at(path, case[2]), res.error)
    end
  end)

  it("fails a request nobody faked as a transport error", function()
    local res, path = run_body("ctx.http.request{ url = 'http://nowhere.test/' }")
    assert.equals(at(path, fmt(H.transport, "GET", "http://nowhere.test/",
                               fmt(H.no_fake, "GET", "http://nowhere.test/"))), res.error)
    assert.equals("http GET http://nowhere.test/: no fake response for GET http://nowhere.test/ "
                  .. "(add one to testing.ctx{http = ...})", res.error:match(":%d+: (.*)$"))
  end)

  it("never shows a URL's userinfo or query string in its errors", function()
    local secret = "http://admin:s3cr3t@127.0.0.1:8080/pay?api_key=k3y"
    local shown = "http://***@127.0.0.1:8080/pay?..."
    local cases = {
      { { error = "Couldn't connect to server" },
        fmt(H.transport, "GET", shown, "Couldn't connect to server") },
      { { status = 503, reason = "Service Unavailable" },
        fmt(H.status_reason, "GET", shown, 503, "Service Unavailable") },
      { { status = 500 }, fmt(H.status, "GET", shown, 500) },
    }
    for _, case in ipairs(cases) do
      local res, path = run_body("ctx.http.request{ url = '" .. secret .. "' }",
                                 { http = { ["GET " .. secret] = case[1] } })
      assert.equals(at(path, case[2]), res.error)
      assert.is_nil(res.error:find("s3cr3t", 1, true))
      assert.is_nil(res.error:find("k3y", 1, true))
      assert.equals(secret, res.http_calls[1].url) -- sent as given
    end
    local res, path = run_body("ctx.http.request{ url = 'ftp://u:pw@x/?k=v' }")
    assert.equals(at(path, fmt(H.url_scheme, "ftp://***@x/?...")), res.error)
  end)

  it("masks URLs as the runtime does (testing.safe_url)", function()
    local cases = {
      { "http://svc/a/b", "http://svc/a/b" },
      { "http://admin:s3cr3t@svc/p", "http://***@svc/p" },
      { "http://token@svc", "http://***@svc" },
      { "https://svc/p?api_key=k", "https://svc/p?..." },
      { "https://svc/p#frag", "https://svc/p#..." },
      { "http://a:b@svc:81/p?q=1#f", "http://***@svc:81/p?..." },
      { "http://u:p@ss@svc/", "http://***@svc/" },
      { "http://u:pa/ss@svc/", "http://***@svc/" },
      { "http://svc/p?to=a@b", "http://svc/p?..." },
      { "admin:pa://ss@svc/p", "***@svc/p" },
      { "", "" },
    }
    for _, case in ipairs(cases) do
      assert.equals(case[2], testing.safe_url(case[1]))
    end
  end)

  it("refuses a header line longer than the runtime sends, instead of cutting it", function()
    local max = testing.HTTP_MAX_HEADER_LINE
    assert.equals(4096, max)
    local res = run_body(("ctx.http.request{ url = 'http://x/', headers = { ['X-Big'] = "
                          .. "string.rep('v', %d) } }"):format(max - 7),
                         { http = function() return {} end })
    assert.equals("ok", res.outcome, res.error)
    assert.equals(max - 7, #res.http_calls[1].headers["X-Big"])
    local path
    res, path = run_body(("ctx.http.request{ url = 'http://x/', headers = { ['X-Big'] = "
                          .. "string.rep('v', %d) } }"):format(max - 6),
                         { http = function() return {} end })
    assert.equals(at(path, fmt(H.header_size, "X-Big", max)), res.error)
    assert.same({}, res.http_calls)
  end)

  it("with raise = false returns nil, err for transport errors and the response for 5xx", function()
    local res = run_body([[
      local r1, e1 = ctx.http.request{ url = "http://x/down", raise = false }
      local r2, e2 = ctx.http.request{ url = "http://x/busy", raise = false }
      local r3 = ctx.http.request{ url = "http://x/missing" }
      ctx.log.info("r", { r1 = r1 == nil, e1 = e1, s2 = r2.status, e2 = e2 == nil, s3 = r3.status })
    ]], { http = { ["GET http://x/down"] = { error = "timed out" },
                   ["GET http://x/busy"] = { status = 503 },
                   ["GET http://x/missing"] = { status = 404 } } })
    assert.equals("ok", res.outcome, res.error)
    assert.same({ r1 = true, e1 = "http GET http://x/down: timed out", s2 = 503, e2 = true, s3 = 404 },
                res.logs[1].fields)
  end)

  it("decodes a JSON response only when it says it is JSON", function()
    local res = run_body([[
      local a = ctx.http.request{ url = "http://x/a" }
      local b = ctx.http.request{ url = "http://x/b" }
      local c = ctx.http.request{ url = "http://x/c" }
      ctx.log.info("r", { a = a.json and a.json.ok, b = b.json == nil, c = c.json == nil })
    ]], { http = {
      ["GET http://x/a"] = { body = '{"ok":true}', headers = { ["content-type"] = "application/problem+json" } },
      ["GET http://x/b"] = { body = '{"ok":true}' },
      ["GET http://x/c"] = { body = "{broken", headers = { ["content-type"] = "application/json" } },
    } })
    assert.same({ a = true, b = true, c = true }, res.logs[1].fields)
  end)

  it("checks its arguments, at the caller's line, in a fixed order", function()
    local cases = {
      { "ctx.http.request()", fmt(H.args, "no value") },
      { "ctx.http.request('http://x/')", fmt(H.args, "string") },
      { "ctx.http.request{ 'http://x/' }", fmt(H.option, "1") },
      { "ctx.http.request{ url = 'http://x/', timout = 2 }", fmt(H.option, "timout") },
      { "ctx.http.request{ method = 1, url = 2 }", fmt(H.url, "number") },
      { "ctx.http.request{ method = 1, url = 'http://x/' }", fmt(H.method, "number") },
      { "ctx.http.request{ method = 'post', url = 'http://x/' }", fmt(H.method_token, "post") },
      { "ctx.http.request{}", fmt(H.url, "nil") },
      { "ctx.http.request{ url = 'ftp://x/' }", fmt(H.url_scheme, "ftp://x/") },
      { "ctx.http.request{ url = 'http://' }", fmt(H.url_scheme, "http://") },
      { "ctx.http.request{ url = 'http://x/a b' }", fmt(H.url_chars, "http://x/a b") },
      { "ctx.http.request{ url = 'http://x/', headers = 'h' }", fmt(H.headers, "string") },
      { "ctx.http.request{ url = 'http://x/', headers = { 'v' } }", fmt(H.header_name, "number") },
      { "ctx.http.request{ url = 'http://x/', headers = { A = true } }", fmt(H.header_value, "A", "boolean") },
      { "ctx.http.request{ url = 'http://x/', headers = { A = 'x\\r\\nB: y' } }", fmt(H.header_chars, "A") },
      { "ctx.http.request{ url = 'http://x/', headers = { ['A:B'] = 'x' } }", fmt(H.header_chars, "A:B") },
      { "ctx.http.request{ url = 'http://x/', body = 5 }", fmt(H.body, "number") },
      { "ctx.http.request{ url = 'http://x/', body = { f = function() end } }",
        fmt(H.body_json, "Cannot serialise function: type not supported") },
      { "ctx.http.request{ url = 'http://x/', timeout = true }", fmt(H.timeout, "boolean") },
      { "ctx.http.request{ url = 'http://x/', timeout = 'soon' }", fmt(H.timeout_duration, "soon") },
      { "ctx.http.request{ url = 'http://x/', timeout = 0 }", fmt(H.timeout_range, "0") },
      { "ctx.http.request{ url = 'http://x/', timeout = -1 }", fmt(H.timeout_range, "-1") },
      { "ctx.http.request{ url = 'http://x/', timeout = '0s' }", fmt(H.timeout_range, "0s") },
      { "ctx.http.request{ url = 'http://x/', raise = 'no' }", fmt(H.raise, "string") },
      { "ctx.http.request{ url = 'http://x/', raise = 0, timeout = true }", fmt(H.raise, "number") },
      { "ctx.http.request{ url = 'http://x/', timeout = true, body = 5 }", fmt(H.timeout, "boolean") },
      { "ctx.http.request{ url = 'http://x/', body = 5, headers = 5 }", fmt(H.body, "number") },
    }
    for _, case in ipairs(cases) do
      local res, path = run_body(case[1], { http = function() return {} end })
      assert.equals("error", res.outcome)
      assert.equals(at(path, case[2]), res.error)
      assert.same({}, res.http_calls) -- a refused request is not sent
    end
  end)

  it("is not available outside a handler call", function()
    local ctx = testing.ctx()
    assert.equals(fmt(E.phase, "http.request", E.phase_none),
                  (misuse(function() ctx.http.request { url = URL } end)))
  end)

  it("says so when a fake function returns something that is not a response", function()
    local res = run_body("ctx.http.request{ url = 'http://x/' }",
                         { http = function() return { status = "ok" } end })
    assert.equals("error", res.outcome)
    assert.equals("testing: the fake for GET http://x/ returned a response that status must be "
                  .. "an integer from 100 to 599, got 'ok'", res.error)
  end)
end)
