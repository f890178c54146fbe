-- ledger: the shop's stock per SKU and each customer's ledger, kept in
-- ctx.store (Redis), exactly once per order.
--
--   order.created   -> stock:<sku>        -qty for each item
--                      ledger:<customer>  orders +1, total_cents +total
--                      order:<id>         state "created", its items and total
--   order.cancelled -> puts back what the order took, once:
--                      stock:<sku> +qty, ledger orders -1, total_cents -total,
--                      order:<id> state "cancelled"
--
-- Exactly once, three ways:
--  * a redelivered or duplicated message (same message id) is skipped by
--    warren's idempotency record before this handler runs;
--  * the writes below are buffered and applied by warren in the same atomic
--    step that marks the message done: a crash between "stock taken" and
--    "message done" cannot happen, and a handler that fails applies nothing;
--  * the same order sent again under another message id finds order:<id>
--    already "created" and changes nothing; a cancel sent twice finds it
--    "cancelled".
--
-- A cancel that arrives before its order (the queue does not promise their
-- order) finds no order:<id>: it records the order as "cancelled" (a
-- tombstone, with cancelled_first = 1) and changes no stock. The order.created
-- that comes later finds the tombstone and takes no stock and books nothing:
-- the order never happened. Order records expire after 30 days.
--
-- Two workers may handle an order's create and its cancel at the same moment.
-- Both read order:<id> first; warren checks at commit that what a message read
-- is still there, so the second to commit sees a conflict, applies nothing and
-- runs again, now seeing the first one's writes.
--
-- stock:<sku> counts units: it starts at whatever the shop seeds (absent = 0)
-- and may go negative (the order service, not this ledger, decides whether an
-- order can be taken).

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
  local state = st.hget(key, "state")
  if state == "cancelled" then
    ctx.log.info("order cancelled before it was created: no stock taken",
                 { order_id = order.order_id })
    return
  elseif state == "created" then
    ctx.log.info("order already booked (sent again under another message id)",
                 { order_id = order.order_id })
    return
  end
  local qty = {}
  for _, item in ipairs(order.items) do
    qty[item.sku] = (qty[item.sku] or 0) + item.qty
  end
  for sku, n in pairs(qty) do
    st.incrby("stock:" .. sku, -n)
    st.hset(key, "item:" .. sku, n)
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
    -- the cancel came first: leave a tombstone, so the order takes nothing later
    st.hset(key, "state", "cancelled")
    st.hset(key, "cancelled_first", 1)
    st.expire(key, ORDER_TTL)
    ctx.log.info("cancel recorded before its order: no stock to put back",
                 { order_id = order.order_id })
    return
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
