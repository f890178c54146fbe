-- orders_handler: the handler warren runs in the orders benchmark
-- (tests/bench/orders.sh; see tests/bench/README.md).
--
-- For each order.created event: take each item's quantity off its SKU's
-- inventory and charge the order's total (integer cents) to its customer,
-- both through ctx.store, so the two writes are applied exactly once with the
-- message's idempotency record. Malformed bodies never get here: warren sends
-- a JSON message whose body is not valid UTF-8 or JSON to the DLQ before any
-- handler runs.
--
-- In the latency runs each body carries `sent_us` (the publisher's clock):
-- the handler then also sets lat:<message id>, whose keyspace notification
-- tells the benchmark the moment the message's writes were committed.

local M = {}

function M.handle(event, ctx)
  local o = event.data
  if type(o) ~= "table" or type(o.items) ~= "table" or type(o.customer_id) ~= "string"
    or type(o.total) ~= "number" then
    return ctx.reject("not an order")
  end
  local st = ctx.store
  for _, item in ipairs(o.items) do
    st.incrby("inventory:" .. item.sku, -item.quantity)
  end
  st.incrby("charged:" .. o.customer_id, o.total)
  if o.sent_us ~= nil then
    st.set("lat:" .. event.id, "1", 600)
  end
end

return M
