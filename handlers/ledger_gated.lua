-- ledger_gated: the ledger of handlers/ledger.lua written in event order, for
-- a subscription with a causal gate instead of a tombstone:
--
--   gates:
--     - type: order.cancelled
--       after: order.created
--       key: json:order_id
--
-- warren runs an order.cancelled only once the order.created of the same
-- order_id is done (handled ok) in this subscription: a cancel that arrives
-- first is parked in Redis and released right after the create's commit (or
-- dead-lettered with reason gate-timeout if no create comes within the gate's
-- timeout). So a cancel always finds its order: no tombstone, no
-- "cancelled_first" branch, and no created-after-cancel branch.
--
--   order.created   -> stock:<sku>        -qty for each item
--                      ledger:<customer>  orders +1, total_cents +total
--                      order:<id>         state "created", its items and total
--   order.cancelled -> puts back what the order took, once
--
-- What the gate does not do: it orders a cancel after its create, not two
-- creates of one order (the same order under another message id still finds
-- order:<id> "created" and books nothing), and a cancel sent twice still
-- finds "cancelled". Which to use: see docs/ordering.md.

local M = {}

local ORDER_TTL = 30 * 24 * 3600 -- seconds

local function cents(total)
  return math.floor(total * 100 + 0.5)
end

-- What is wrong with an order.created body, or nil.
local function problem(order)
  if type(order) ~= "table" or type(order.order_id) ~= "string" or order.order_id == "" then
    return "the body is not an order (no order_id)"
  end
  if type(order.customer_id) ~= "string" or order.customer_id == "" then
    return "order " .. order.order_id .. " has no customer_id"
  end
  if type(order.items) ~= "table" or #order.items == 0 then
    return "order " .. order.order_id .. " has no items"
  end
  for i, item in ipairs(order.items) do
    if type(item) ~= "table" or type(item.sku) ~= "string" or item.sku == ""
      or type(item.qty) ~= "number" or item.qty < 1 or item.qty % 1 ~= 0 then
      return ("order %s: item %d needs a sku and a whole qty of at least 1")
        :format(order.order_id, i)
    end
  end
  if type(order.total) ~= "number" or order.total < 0 then
    return "order " .. order.order_id .. " has no total"
  end
  return nil
end

local function created(order, ctx)
  local why = problem(order)
  if why then
    return ctx.reject(why)
  end
  local st = ctx.store
  local key = "order:" .. order.order_id
  if st.hget(key, "state") ~= nil then
    ctx.log.info("order already booked (sent again under another message id)",
                 { order_id = order.order_id })
    return
  end
  for _, item in ipairs(order.items) do
    st.incrby("stock:" .. item.sku, -item.qty)
    st.hincrby(key, "item:" .. item.sku, item.qty)
  end
  local total = cents(order.total)
  st.hset(key, "state", "created")
  st.hset(key, "customer_id", order.customer_id)
  st.hset(key, "total_cents", total)
  st.expire(key, ORDER_TTL)
  st.hincrby("ledger:" .. order.customer_id, "orders", 1)
  st.hincrby("ledger:" .. order.customer_id, "total_cents", total)
  ctx.log.info("stock taken", { order_id = order.order_id, total_cents = total })
end

local function cancelled(order, ctx)
  if type(order) ~= "table" or type(order.order_id) ~= "string" or order.order_id == "" then
    return ctx.reject("order.cancelled: the body is not an order (no order_id)")
  end
  local st = ctx.store
  local key = "order:" .. order.order_id
  local o = st.hgetall(key)
  if o.state == "cancelled" then
    ctx.log.info("order already cancelled", { order_id = order.order_id })
    return
  end
  if o.state ~= "created" then
    -- the gate runs a cancel only after its create is done: this is not one
    -- of ours (or its record expired); refuse it rather than guess
    return ctx.reject("order.cancelled: order " .. order.order_id .. " is not known here")
  end
  for field, n in pairs(o) do
    local sku = field:match("^item:(.+)$")
    if sku then
      st.incrby("stock:" .. sku, tonumber(n))
    end
  end
  local total = tonumber(o.total_cents) or 0
  st.hincrby("ledger:" .. o.customer_id, "orders", -1)
  st.hincrby("ledger:" .. o.customer_id, "total_cents", -total)
  st.hset(key, "state", "cancelled")
  ctx.log.info("stock put back", { order_id = order.order_id, total_cents = total })
end

local HANDLERS = {
  ["order.created"] = created,
  ["order.cancelled"] = cancelled,
}

function M.handle(event, ctx)
  local handle = HANDLERS[event.type]
  if not handle then
    return ctx.reject("ledger does not handle events of type " .. tostring(event.type))
  end
  return handle(event.data, ctx)
end

return M
