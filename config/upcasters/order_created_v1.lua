-- order.created v1 -> v2 (config/contracts.yaml): `customer` became
-- `customer_id`, `lines[].quantity` became `items[].qty`, `amount` became
-- `total`. Returns the v2 data; warren validates it against the v2 schema
-- before the handler sees it. Runs sandboxed, like a handler.
return function(data, info)
  local items = {}
  for i, line in ipairs(data.lines) do
    items[i] = { sku = line.sku, qty = line.quantity }
  end
  return {
    order_id = data.order_id,
    customer_id = data.customer,
    items = items,
    total = data.amount,
    email = data.email,
  }
end
