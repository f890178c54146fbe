-- service: where the order service beside warren answers (require "service").
--
-- Handlers cannot read the environment (the sandbox has no os.getenv), so the
-- address lives in this module, in the same ConfigMap as the handler: the
-- service container listens on 8080 in the same pod, hence loopback.

return {
  url = "http://127.0.0.1:8080",
  exchange = "shop.events",
}
