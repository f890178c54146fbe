-- contract: the texts and limits of warren's handler API, in one place.
--
-- The sidecar and the busted kit (warren.testing) both take them from this
-- file, so a handler sees the same words under either:
--   * the C side: at build time sidecar/tools/gen_contract.c turns each text
--     into a C string macro (generated/contract.h: WR_E_<KEY> for ERRORS,
--     WR_EH_ for HTTP_ERRORS, WR_ES_ for STORE_ERRORS, WR_EB_ for
--     BREAKER_ERRORS, WR_LIMIT_<KEY> for LIMITS), which the compiler checks
--     against each call's arguments (-Wformat);
--   * the kit (lua/warren/testing.lua) loads this file, found beside it:
--     sidecar/ in the source tree, share/warren/ when installed, or
--     $WARREN_SHARE_DIR; testing.ERRORS and the rest are its tables.
--
-- Texts are format strings for string.format and printf alike, with only
-- %s, %.<n>s, %d and %%: the generator writes %d as %lld for C (the C side
-- passes long long), and refuses any other conversion. Plain data: no code
-- runs here but the concatenations.

local M = {}

--- Error texts of the runtime (lua_rt.c, lua_ctx.c, envelope.c for `empty_body`).
-- The `ctx.*` errors are raised at the handler's line (the nearest handler
-- frame, also through pcall and a breaker's call), so the text a
-- handler sees starts with its own `file:line: `.
M.ERRORS = {
  -- a ctx function used outside its phase: phase:format(fn, phase_init or phase_none)
  phase = "ctx.%s is not available %s",
  phase_init = "in init (only while handling a message)",
  phase_none = "outside a handler call",

  publish_args = "ctx.publish(exchange, routing_key, body [, opts]) takes 3 or 4 arguments, "
    .. "got %d",
  publish_exchange = 'ctx.publish: exchange must be a string ("" for the default exchange), '
    .. "got %s",
  publish_routing_key = "ctx.publish: routing_key must be a string, got %s",
  publish_body = "ctx.publish: body must be a string or a table, got %s",
  publish_opts = "ctx.publish: opts must be a table, got %s",
  publish_limit = "ctx.publish: more than %d publishes in one message",
  publish_too_big = "ctx.publish: this message's events would exceed max_publish_size (%d bytes)",
  publish_encode = "ctx.publish: body cannot be encoded as JSON: %s",
  publish_content_type = "ctx.publish: opts.content_type must be a string",
  publish_type = "ctx.publish: opts.type must be a string",
  publish_headers = "ctx.publish: opts.headers must be a table",
  publish_header_value = "ctx.publish: opts.headers must map strings to strings, numbers or "
    .. "booleans",
  publish_long = "ctx.publish: %s is longer than 255 bytes (%d)",
  publish_headers_big = "ctx.publish: opts.headers take more than %d bytes",
  -- opts.cloudevent = {type = ..., source = ... [, subject = ...] [, mode = ...]}
  publish_cloudevent = "ctx.publish: opts.cloudevent must be a table",
  publish_cloudevent_field = "ctx.publish: opts.cloudevent.%s must be a string",
  publish_cloudevent_len = "ctx.publish: opts.cloudevent.%s must be 1 to %d bytes",
  publish_cloudevent_mode = 'ctx.publish: opts.cloudevent.mode must be "binary" or "structured"',

  reject_reason = "ctx.reject(reason): reason must be a string, got %s",

  retry_reason = "ctx.retry(reason [, opts]): reason must be a string, got %s",
  retry_opts = "ctx.retry: opts must be a table, got %s",
  retry_delay = "ctx.retry: opts.delay '%s' is not a duration like 5s",
  retry_delay_type = "ctx.retry: opts.delay must be milliseconds or a duration",
  retry_delay_range = "ctx.retry: opts.delay must be from 0 to 86400000 milliseconds, got %s",

  -- log_msg:format(level, type), log_fields:format(level, type)
  log_msg = "ctx.log.%s(msg [, fields]): msg must be a string, got %s",
  log_fields = "ctx.log.%s: fields must be a table, got %s",

  -- how a failed call is reported (wr_lua_result.error)
  timeout = "handler timed out after %d ms",
  interrupted = "handler interrupted: the sidecar is shutting down",
  error_nil = "error(nil) raised (raise a string: error('what went wrong'))",
  error_object = "error object is a %s, not a string (raise a string: error('what went wrong'))",
  invalid_json = "the body is not valid JSON: %s",
  empty_body = "the message body is empty",

  -- loading (wr_lua_create's err)
  load_open = "%s: cannot open %s: %s",
  load_too_large = "%s: cannot load %s: larger than %d bytes",
  load_not_regular = "%s: cannot load %s: not a regular file",
  load_read = "%s: cannot read %s: %s",
  load_bytecode = "%s: precompiled bytecode is not accepted as a handler",
  load_not_table = "%s: the handler must return a table with handle(event, ctx), it returned %s",
  load_no_handle = "%s: the returned table has no function 'handle' (found %s)",
  load_init_type = "%s: 'init' must be a function, found %s",
  init_failed = "init failed: %s",
}

--- Error texts of ctx.http.request (lua_http.c). Argument errors are raised
-- at the caller's level and checked in this order: the phase (ERRORS.phase
-- with "http.request"), `args`, `option` (the first unknown key), then url,
-- method, raise, timeout, body, headers. `status`, `status_reason` and
-- `transport` are raised (raise = true) or returned as `nil, err` (transport
-- errors with raise = false).
M.HTTP_ERRORS = {
  args = "ctx.http.request(opts) takes one table, got %s",
  option = "ctx.http.request{...}: unknown option '%s' (expected method, url, headers, body, "
    .. "timeout, raise)",
  method = "ctx.http.request{...}: method must be a string, got %s",
  method_token = "ctx.http.request{...}: method '%s' is not an HTTP method like GET or POST",
  url = "ctx.http.request{...}: url must be a string, got %s",
  url_scheme = "ctx.http.request{...}: url '%s' does not start with http:// or https://",
  url_chars = "ctx.http.request{...}: url '%s' contains spaces or control characters",
  headers = "ctx.http.request{...}: headers must be a table, got %s",
  header_name = "ctx.http.request{...}: header names must be strings, got %s",
  header_value = "ctx.http.request{...}: header '%s' must be a string or a number, got %s",
  header_chars = "ctx.http.request{...}: header '%s' holds a line break, or a colon in its name",
  -- header_size:format(name, LIMITS.http_max_header_line): a "Name: value" line too long
  header_size = "ctx.http.request{...}: header '%s' is longer than %d bytes",
  body = "ctx.http.request{...}: body must be a string or a table, got %s",
  body_json = "ctx.http.request{...}: body cannot be encoded as JSON: %s",
  timeout = "ctx.http.request{...}: timeout must be seconds or a duration like 2s, got %s",
  timeout_duration = "ctx.http.request{...}: timeout '%s' is not a duration like 2s",
  timeout_range = "ctx.http.request{...}: timeout must be more than 0 seconds, got %s",
  raise = "ctx.http.request{...}: raise must be a boolean, got %s",
  -- outcomes: status:format(method, url, status), status_reason adds the reason phrase;
  -- the url as testing.safe_url shows it (no userinfo, no query string)
  status = "http %s %s: %d",
  status_reason = "http %s %s: %d %s",
  transport = "http %s %s: %s",
  no_time = "http %s %s: no time left before the handler's deadline",
  refused = "http: the request was refused",
  -- the kit's own transport error for a request nobody faked
  no_fake = "no fake response for %s %s (add one to testing.ctx{http = ...})",
}

--- Error texts of ctx.breaker (lua_breaker.c).
M.BREAKER_ERRORS = {
  name = "ctx.breaker(name): name must be a non-empty string of at most 100 bytes, got %s",
  self = "breaker:%s: call it with ':' (breaker:%s(...))",
  fn = "breaker:call(fn, ...): fn must be a function, got %s",
  open = "breaker '%s' is open: call refused, the message will be retried later",
  not_breaker = "breaker:%s: not a breaker (use ctx.breaker(name))",
  unavailable = "ctx.breaker: breakers are not available here",
}

--- Error texts of ctx.store (lua_store.c, storebuf.c; a commit's in decide.c).
-- Arguments are checked in the runtime's order: the phase (ERRORS.phase with
-- "store.<fn>"), availability, the argument count, the key, then the call's
-- other arguments (set: ttl before value; hincrby: n before field).
M.STORE_ERRORS = {
  unavailable = "ctx.store.%s: ctx.store is not available: idempotency is off for this "
    .. "subscription (the store's writes are committed with the idempotency record)",
  nargs = "ctx.store.%s takes %d argument%s, got %d",
  nargs_range = "ctx.store.%s takes %d to %d arguments, got %d",
  members = "ctx.store.%s(key, member...) takes a key and at least one member, got %d arguments",
  key = "ctx.store.%s: key must be a string, got %s",
  key_len = "ctx.store.%s: key must be 1 to %d bytes, got %d",
  value = "ctx.store.%s: %s must be a string or a number, got %s",
  value_len = "ctx.store.%s: %s is %d bytes, more than store.max_value_bytes (%d)",
  int = "ctx.store.%s: %s must be a whole number, got %s",
  int_range = "ctx.store.%s: %s must be a whole number within +-2^53, got %s",
  ttl = "ctx.store.%s: ttl must be a positive number of seconds (at most 10 years), got %s",
  -- what the buffer refuses (storebuf.c), after "ctx.store.<fn>: "
  max_writes = "more than %d writes in one message (store.max_writes)",
  kind = "key '%s' holds %s in this message",
  not_integer = "value is not an integer",
  hash_not_integer = "hash value is not an integer",
  overflow = "increment or decrement would overflow",
  -- what Redis answers a read of a key of another type (after "ctx.store.<fn>: ")
  wrongtype = "Redis: WRONGTYPE Operation against a key holding the wrong kind of value",
  -- how a commit that did not apply is reported (decide.c, for the worker and exec), then
  -- the commit script's words
  refused = "store writes refused, nothing applied: %s",
  conflict = "store %s; nothing applied, the message runs again",
  failed = "the commit failed, the message runs again: %s",
}

--- Limits of the handler API (whole numbers).
M.LIMITS = {
  max_publishes = 1000,             -- ctx.publish calls per message
  max_publish_bytes = 16777216,     -- what ctx.publish may buffer per message by default
  max_header_bytes = 65536,         -- ctx.publish's opts.headers, names and values
  short_string = 255,               -- AMQP short strings: exchange, routing key, type, names
  max_source = 8388608,             -- the largest handler or module file (WR_LUA_MAX_SOURCE)
  hook_every = 10000,               -- VM instructions between deadline checks
  max_error = 1023,                 -- wr_lua_result.error holds this many bytes
  http_max_header_line = 4096,      -- a request header line "Name: value" of ctx.http.request
  store_key_max = 1023,             -- a ctx.store key, store.prefix included, in bytes
}

return M
