-- The four shop handlers together, without a broker: what orders publishes
-- is handed to inventory and payments, what payments publishes to
-- notifications, against a fake shop service in a few lines of Lua that
-- answers as deploy/shop_service.py does (tombstones for early cancels and
-- early releases, replies replayed per Idempotency-Key).
--
-- The stories event-driven shops get paged for cannot happen here: a message
-- handled twice (its idempotency record lost, a producer's copy under a new
-- id) charges once; a cancel that reaches the service before its order means
-- the order is never confirmed, reserved or charged; a cancellation that
-- overtakes its confirmation leaves no stock held.

local testing = require "warren.testing"
local cjson = require "cjson"
local lyaml = require "lyaml"
local shop = require "shop"

-- A fake shop service: a function fake for testing.ctx{http = ...}.
local function fake_shop()
  local s = { orders = {}, tombstones = {}, reserved = {}, released = {}, charges = {},
              replies = {} }
  local routes = {
    ["/orders"] = function(b)
      if s.tombstones[b.order_id] then
        return 409, { error = "cancelled", reason = "cancelled before it was created" }
      elseif s.orders[b.order_id] then
        return 200, { state = s.orders[b.order_id] }
      end
      s.orders[b.order_id] = "created"
      return 201, { state = "created" }
    end,
    ["/inventory/reserve"] = function(b)
      if s.released[b.order_id] then
        return 410, { error = "released" }
      end
      s.reserved[b.order_id] = b.items
      return 200, { reserved = b.items }
    end,
    ["/inventory/release"] = function(b)
      s.reserved[b.order_id], s.released[b.order_id] = nil, true
      return 200, { released = true }
    end,
    ["/payments"] = function(b)
      s.charges[#s.charges + 1] = b.order_id
      return 201, { payment_id = "pay-" .. #s.charges }
    end,
  }
  function s.http(req)
    local path = req.url:sub(#shop.url + 1)
    local key = path .. " " .. req.headers["Idempotency-Key"]
    if not s.replies[key] then
      local body, status, answer = req.body, nil, nil
      local id = path:match("^/orders/(.+)/cancel$")
      if id then
        if s.orders[id] then
          s.orders[id] = "cancelled"
          status, answer = 200, { state = "cancelled" }
        else
          s.tombstones[id] = true
          status, answer = 202, { state = "cancel-recorded" }
        end
      else
        status, answer = routes[path](body)
      end
      s.replies[key] = { status = status, body = answer }
    end
    return s.replies[key]
  end
  return s
end

-- Does the topic binding key PATTERN match ROUTING_KEY? (AMQP: words between
-- dots, `*` one word, `#` zero or more.)
local function topic_match(pattern, routing_key)
  local function words(s)
    local out = {}
    for w in (s .. "."):gmatch("([^.]*)%.") do
      out[#out + 1] = w
    end
    return out
  end
  local p, k = words(pattern), words(routing_key)
  local function from(i, j)
    if i > #p then
      return j > #k
    end
    if p[i] == "#" then
      for jj = j, #k + 1 do
        if from(i + 1, jj) then
          return true
        end
      end
      return false
    end
    return j <= #k and (p[i] == "*" or p[i] == k[j]) and from(i + 1, j + 1)
  end
  return from(1, 1)
end

-- The subscriptions of config/warren.yaml, read from the file (the specs run
-- from handlers/): their handler, what they are bound to (exchange, type and
-- binding keys), and what they key a message by (payments: the order).
local function config_subscriptions()
  local fh = assert(io.open("../config/warren.yaml"))
  local cfg = lyaml.load(fh:read("*a"))
  fh:close()
  local default_key = cfg.defaults and cfg.defaults.idempotency and cfg.defaults.idempotency.key
  local subs = {}
  for _, s in ipairs(cfg.subscriptions) do
    local key = s.idempotency and s.idempotency.key or default_key or "message_id"
    local sub = { name = s.name, handler = s.handler:match("([^/]+)$"), bindings = {} }
    if key ~= "message_id" then
      sub.key = assert(key:match("^json:(.+)$"), "a key this spec cannot derive: " .. key)
    end
    for _, bnd in ipairs(s.bindings or {}) do
      local keys = type(bnd.routing_keys) == "table" and bnd.routing_keys or { bnd.routing_keys }
      local kind = bnd.type or "topic"
      assert(kind == "topic" or kind == "direct",
             "an exchange type this spec cannot route: " .. kind)
      sub.bindings[#sub.bindings + 1] = { exchange = bnd.exchange, type = kind, keys = keys }
    end
    subs[#subs + 1] = sub
  end
  return subs
end

local SUBSCRIPTIONS = config_subscriptions()

-- Is a message published to EXCHANGE with ROUTING_KEY delivered to SUB?
local function routed(sub, exchange, routing_key)
  for _, bnd in ipairs(sub.bindings) do
    if bnd.exchange == exchange then
      for _, k in ipairs(bnd.keys) do
        if (bnd.type == "direct" and k == routing_key)
          or (bnd.type == "topic" and topic_match(k, routing_key)) then
          return true
        end
      end
    end
  end
  return false
end

-- A tiny warren: runs messages through the handlers, skips a key it has
-- handled already, and delivers what a handler published to the subscribers,
-- at once or held back until deliver() (to reorder events).
local function bus(service)
  local b = { done = {}, held = {}, outcomes = {} }
  local handlers = {}
  for _, sub in ipairs(SUBSCRIPTIONS) do
    handlers[sub.name] = assert(testing.load(sub.handler))
  end
  function b.run(name, ev, key)
    key = key or ev.id
    if b.done[name .. ":" .. key] then
      b.outcomes[#b.outcomes + 1] = name .. " duplicate " .. key
      return
    end
    local res = testing.run(handlers[name], ev, testing.ctx { idempotency_key = key,
                                                             subscription = name,
                                                             http = service.http })
    assert.is_not.equals("error", res.outcome, res.error)
    b.done[name .. ":" .. key] = true
    b.outcomes[#b.outcomes + 1] = name .. " " .. res.outcome .. " " .. key
    for _, p in ipairs(res.published) do
      assert.equals(shop.exchange, p.exchange)
      for _, sub in ipairs(SUBSCRIPTIONS) do
        if routed(sub, p.exchange, p.routing_key) then
          local out = testing.event { id = p.message_id, type = p.type, body = p.body }
          local k = sub.key and out.data[sub.key] or out.id
          if b.hold and b.hold[p.routing_key] then
            b.held[#b.held + 1] = { sub.name, out, k }
          else
            b.run(sub.name, out, k)
          end
        end
      end
    end
  end
  function b.deliver()
    local held = b.held
    b.held, b.hold = {}, nil
    for _, h in ipairs(held) do
      b.run(h[1], h[2], h[3])
    end
  end
  return b
end

local function created(id, order_id)
  return testing.event { id = id, type = "order.created", data = {
    order_id = order_id, customer_id = "c-7", email = "ann@example.com",
    items = { { sku = "tea", qty = 1 } }, total = 5 } }
end

local function cancelled(id, order_id)
  return testing.event { id = id, type = "order.cancelled", data = { order_id = order_id } }
end

describe("the routing of config/warren.yaml", function()
  it("is read from the file", function()
    local names = {}
    for _, sub in ipairs(SUBSCRIPTIONS) do
      names[#names + 1] = sub.name
    end
    assert.same({ "orders", "inventory", "payments", "notifications", "ledger" }, names)
    assert.is_true(routed(SUBSCRIPTIONS[3], shop.exchange, "order.confirmed"))
    assert.equals("order_id", SUBSCRIPTIONS[3].key)
    assert.is_false(routed(SUBSCRIPTIONS[3], "elsewhere", "order.confirmed"))
    assert.is_false(routed(SUBSCRIPTIONS[4], shop.exchange, "order.confirmed"))
  end)

  it("matches topic binding keys as the broker does", function()
    assert.is_true(topic_match("order.confirmed", "order.confirmed"))
    assert.is_false(topic_match("order.confirmed", "order.confirmed.late"))
    assert.is_true(topic_match("order.*", "order.created"))
    assert.is_false(topic_match("order.*", "order.cancellation.confirmed"))
    assert.is_true(topic_match("order.#", "order.cancellation.confirmed"))
    assert.is_true(topic_match("order.#", "order"))
    assert.is_true(topic_match("#", "payment.captured"))
    assert.is_false(topic_match("*.captured", "captured"))
  end)
end)

describe("the order flow", function()
  local service, flow

  before_each(function()
    service = fake_shop()
    flow = bus(service)
  end)

  it("confirms, reserves, charges and notifies an order once", function()
    flow.run("orders", created("evt-1", "o-1"))
    assert.same({ "o-1" }, service.charges)
    assert.same({ { sku = "tea", qty = 1 } }, service.reserved["o-1"])
    assert.same({ "orders ok evt-1", "inventory ok evt-1:orders:1", "payments ok o-1",
                  "notifications ok o-1:payments:1" }, flow.outcomes)
  end)

  it("charges once when the same message runs again after its record was lost", function()
    flow.run("orders", created("evt-1", "o-1"))
    flow.done = {} -- Redis lost every record: everything runs again
    flow.run("orders", created("evt-1", "o-1"))
    assert.same({ "o-1" }, service.charges) -- the service replayed its first answers
  end)

  it("charges once when a producer sends the order again under a new message id", function()
    flow.run("orders", created("evt-1", "o-1"))
    flow.run("orders", created("evt-1-again", "o-1"))
    assert.same({ "o-1" }, service.charges)
    assert.equals("payments duplicate o-1", flow.outcomes[#flow.outcomes])
  end)

  it("never confirms, reserves or charges an order whose cancel came first", function()
    flow.run("orders", cancelled("evt-2", "o-1"))
    flow.run("orders", created("evt-1", "o-1"))
    assert.same({}, service.charges)
    assert.is_nil(service.reserved["o-1"])
    assert.same({ "orders ok evt-2", "orders ok evt-1" }, flow.outcomes)
  end)

  it("releases the stock of an order cancelled after it was created", function()
    flow.run("orders", created("evt-1", "o-1"))
    flow.run("orders", cancelled("evt-2", "o-1"))
    assert.is_nil(service.reserved["o-1"])
    assert.equals("cancelled", service.orders["o-1"])
  end)

  it("holds no stock when the cancellation overtakes the confirmation", function()
    flow.hold = { ["order.confirmed"] = true } -- order.confirmed is still on its way
    flow.run("orders", created("evt-1", "o-1"))
    flow.run("orders", cancelled("evt-2", "o-1"))
    flow.deliver()
    assert.is_nil(service.reserved["o-1"])
    -- the order was created before its cancel, so it is charged: the flow has
    -- no refund step (yet)
    assert.same({ "orders ok evt-1", "orders ok evt-2", "inventory ok evt-2:orders:1",
                  "inventory ok evt-1:orders:1", "payments ok o-1", "notifications ok o-1:payments:1" },
                flow.outcomes)
  end)
end)
