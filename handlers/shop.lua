-- shop: settings the shop's handlers share (require "shop").
--
-- url is where the services beside warren answer (in the demo and the tests,
-- deploy/shop_service.py); exchange is where the shop's events are published.
-- Handlers cannot read the environment (the sandbox has no os.getenv), so
-- each deployment ships its own copy of this file, in the same ConfigMap as
-- the handlers: the demo and the integration test write one with their port.

return {
  url = "http://127.0.0.1:8089",
  exchange = "shop.events",
}
