--- warren.testing: run warren handlers under busted with the runtime's ctx API.
--
-- A handler spec builds an event (`testing.event{...}`), a ctx
-- (`testing.ctx{...}`), loads the handler the way the sidecar does
-- (`testing.load(path)`: the same sandbox, the same locked globals, the same
-- `require`) and runs one message (`testing.run(module, event, ctx)`). The
-- result says what warren would do with the message: `ok` (and what it would
-- publish), `rejected`, `retry`, `error`, `timeout` or `invalid`.
--
-- The ctx functions check their arguments in the order the sidecar does
-- (sidecar/src/lua/lua_ctx.c, lua_http.c, lua_store.c, lua_breaker.c) and
-- raise the same texts at the handler's line: both take them from
-- sidecar/lua/contract.lua (testing.ERRORS, HTTP_ERRORS, STORE_ERRORS,
-- BREAKER_ERRORS are its tables), and both build the handler's globals with
-- sidecar/lua/sandbox.lua. Nothing here touches the network or the
-- wall clock: HTTP answers come from fakes given to testing.ctx, and
-- ctx.now() reads a fake clock that only ctx.clock moves.
--
-- What the kit does not reproduce: the memory limit (no "out-of-memory"
-- outcome), the shutdown interrupt, an HTTP call cut short by the handler's
-- deadline, and the envelope checks other than an empty or non-JSON body.
-- Timeouts are measured in CPU time (os.clock).
-- Needs LuaJIT, like the runtime: run busted with `--lua=luajit` (the
-- `.busted` file in handlers/ does).
--
-- @module warren.testing

if not setfenv or not loadstring then
  error("warren.testing needs LuaJIT (the sidecar's Lua): run busted with --lua=luajit", 2)
end

local cjson = require "cjson"
local cjson_safe = require "cjson.safe"

local type, pairs, ipairs, select = type, pairs, ipairs, select
local tostring, tonumber = tostring, tonumber
local error, pcall, setmetatable, getmetatable = error, pcall, setmetatable, getmetatable
local fmt, floor, huge = string.format, math.floor, math.huge
local sethook, gethook, getinfo = debug.sethook, debug.gethook, debug.getinfo
local co_create, co_resume, co_status, co_running =
  coroutine.create, coroutine.resume, coroutine.status, coroutine.running
local bxor = bit and bit.bxor
local jit = rawget(_G, "jit")
local string_table = string -- the strings' metatable __index: s:dump() looks here

local testing = { _VERSION = "0.1.0" }

-- warren's own Lua files beside the kit: sidecar/lua/ in the source tree
-- (lua/warren/testing.lua -> ../../sidecar), or where the package installs
-- them (share/lua/5.1/warren/testing.lua -> share/warren/), or $WARREN_SHARE_DIR.
-- The kit takes the handler API's texts and limits (lua/contract.lua) and the
-- sandbox (lua/sandbox.lua) from there: the very files the sidecar embeds.
local THIS_DIR = (debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$")) or "."
local SHARE_DIRS = { os.getenv("WARREN_SHARE_DIR"), THIS_DIR .. "/../../sidecar",
                     THIS_DIR .. "/../../../warren" }
local function share_dir()
  local tried = {}
  for _, dir in pairs(SHARE_DIRS) do
    local path = dir .. "/lua/contract.lua"
    tried[#tried + 1] = path
    local fh = io.open(path, "rb")
    if fh then
      fh:close()
      return dir
    end
  end
  error("warren.testing: cannot find warren's Lua files (tried " .. table.concat(tried, ", ")
        .. "); set WARREN_SHARE_DIR to the directory holding lua/contract.lua (the source "
        .. "tree's sidecar/, or share/warren)", 3)
end
local SHARE_DIR = share_dir()
local contract = assert(loadfile(SHARE_DIR .. "/lua/contract.lua"))()

--- Error texts of the runtime, as format strings (both string.format and printf):
-- sidecar/lua/contract.lua's ERRORS, which the sidecar's C code uses too.
-- The `ctx.*` errors are raised at the handler's line (the nearest handler
-- frame, also through pcall and a breaker's call), so the text a
-- handler sees starts with its own `file:line: `.
-- @table ERRORS
testing.ERRORS = contract.ERRORS

--- Error texts of ctx.http.request (contract.lua's HTTP_ERRORS, used by
-- sidecar/src/lua/lua_http.c). Argument errors are raised at the caller's
-- level and checked in this order: the phase (ERRORS.phase with
-- "http.request"), `args`, `option` (the first unknown key), then url,
-- method, raise, timeout, body, headers. `status`, `status_reason` and
-- `transport` are raised (raise = true) or returned as `nil, err` (transport
-- errors with raise = false). `no_fake` is the kit's own.
-- @table HTTP_ERRORS
testing.HTTP_ERRORS = contract.HTTP_ERRORS

--- The longest request header line ("Name: value") ctx.http.request sends
-- (WR_HTTP_MAX_HEADER_LINE in sidecar/src/lua/lua_http.h).
testing.HTTP_MAX_HEADER_LINE = contract.LIMITS.http_max_header_line

--- A URL as ctx.http's error texts show it (wr_http_safe_url in
-- sidecar/src/lua/lua_http.c): the userinfo (between "://" and the last "@"
-- before the query) replaced by "***", the query string and fragment by
-- "?..." or "#...". Error texts reach logs and DLQ headers: no credentials.
-- @tparam string url
-- @treturn string
function testing.safe_url(url)
  local scheme = url:match("^%a[%w+%.%-]*://") or ""
  local rest = url:sub(#scheme + 1)
  local cut = rest:find("[?#]")
  local main, tail = rest, ""
  if cut then
    main, tail = rest:sub(1, cut - 1), rest:sub(cut, cut) .. "..."
  end
  local at = main:match("^.*()@")
  if at then
    main = "***" .. main:sub(at)
  end
  return scheme .. main .. tail
end

--- Error texts of ctx.breaker (contract.lua's BREAKER_ERRORS, used by sidecar/src/lua/lua_breaker.c).
-- @table BREAKER_ERRORS
testing.BREAKER_ERRORS = contract.BREAKER_ERRORS

local E, H = testing.ERRORS, testing.HTTP_ERRORS

local LIMITS = contract.LIMITS
local MAX_PUBLISHES = LIMITS.max_publishes          -- ctx.publish calls per message
local MAX_PUBLISH_BYTES = LIMITS.max_publish_bytes  -- defaults.max_publish_size
local HOOK_EVERY = LIMITS.hook_every                -- VM instructions between deadline checks
local DEFAULT_TIMEOUT_MS = 5000     -- handler_timeout's default
local DEFAULT_MAX_ATTEMPTS = 5      -- retry.max_attempts' default
local DEFAULT_NOW = 1767225600      -- the fake clock's start: 2026-01-01T00:00:00Z
local DEFAULT_VERSION = "000000000000"
local MAX_ERROR = LIMITS.max_error   -- wr_lua_result.error holds 1023 bytes
local MAX_SOURCE = LIMITS.max_source -- WR_LUA_MAX_SOURCE: the largest handler or module file

-- The sandbox's read_source(path) (lua_rt.c's read_module): the text of a
-- module file, or nil, why, and true when it does not exist. The runtime also
-- refuses what is not a regular file (a FIFO, a device) without opening it;
-- plain Lua cannot tell, so the kit reads what it is given.
local function read_source(path)
  local fh, oerr = io.open(path, "rb")
  if not fh then
    local why = tostring(oerr)
    if why:sub(1, #path + 2) == path .. ": " then
      why = why:sub(#path + 3)
    end
    return nil, fmt(E.load_open, path, "module", why),
      why == "No such file or directory"
  end
  local src = fh:read("*a")
  fh:close()
  if #src > MAX_SOURCE then
    return nil, fmt(E.load_too_large, path, "module", MAX_SOURCE)
  end
  return src
end
local LEVELS = { "debug", "info", "warn", "error" }

-- The sandbox: sidecar/lua/sandbox.lua, the file the sidecar embeds. It
-- receives the globals, the handler's directory and the cjson modules, and
-- returns the handler's env.
local SANDBOX_LUA
do
  local fh = assert(io.open(SHARE_DIR .. "/lua/sandbox.lua", "rb"))
  SANDBOX_LUA = fh:read("*a")
  fh:close()
end
testing._SANDBOX_LUA = SANDBOX_LUA -- for the spec that compares it with the binary's

-- Private state, keyed weakly by the public tables.
local states = setmetatable({}, { __mode = "k" })   -- ctx -> its state
local modules = setmetatable({}, { __mode = "k" })  -- module -> {path, version}
local invalid = setmetatable({}, { __mode = "k" })  -- event -> {reason, error}

local SENTINEL = newproxy and newproxy(false) or {} -- what ctx.reject / ctx.retry raise
local event_count, trace_count = 0, 0

---------------------------------------------------------------------------
-- helpers
---------------------------------------------------------------------------

-- luaL_typename: the type of argument I of N, "no value" past the end.
local function arg_type(n, i, v)
  if i > n then
    return "no value"
  end
  return type(v)
end

-- A value for a misuse message: numbers as themselves, the rest by type.
local function describe(v)
  if type(v) == "number" then
    return tostring(v)
  elseif type(v) == "string" then
    return "'" .. v .. "'"
  end
  return type(v)
end

local function deep_copy(v, seen)
  if type(v) ~= "table" then
    return v
  end
  seen = seen or {}
  if seen[v] then
    return seen[v]
  end
  local c = {}
  seen[v] = c
  for k, x in pairs(v) do
    c[deep_copy(k, seen)] = deep_copy(x, seen)
  end
  return setmetatable(c, getmetatable(v))
end

-- wr_envelope_is_json_type: no content type, application/json, text/json or
-- application/*+json (parameters after ';' ignored).
local function is_json_type(ct)
  if ct == nil or ct == "" then
    return true
  end
  local media = ct:match("^[^; ]*"):lower()
  if media == "application/json" or media == "text/json" then
    return true
  end
  return #media > 17 and media:sub(1, 12) == "application/" and media:sub(-5) == "+json"
end

-- wr_config_parse_duration: "0", or one or more <digits><ms|s|m|h|d>.
-- Returns milliseconds, or nil when TEXT is not a duration.
local UNITS = { ms = 1, s = 1000, m = 60000, h = 3600000, d = 86400000 }
local function parse_duration(text)
  if text == "" then
    return nil
  end
  if text == "0" then
    return 0
  end
  local total, i = 0, 1
  while i <= #text do
    local digits = text:match("^%d+", i)
    if not digits then
      return nil
    end
    i = i + #digits
    local unit = text:sub(i, i + 1) == "ms" and "ms" or text:sub(i, i)
    local scale = UNITS[unit]
    if not scale then
      return nil
    end
    i = i + #unit
    total = total + tonumber(digits) * scale
    if total >= 2 ^ 63 then
      return nil
    end
  end
  return total
end

-- The first line of an error value, as wr_lua_handle reports it.
local function error_text(e)
  local msg
  if type(e) == "string" or type(e) == "number" then
    msg = tostring(e)
  elseif e == nil then
    msg = E.error_nil
  else
    msg = fmt(E.error_object, type(e))
  end
  return (msg:match("^[^\n]*"):sub(1, MAX_ERROR))
end

-- FNV-1a 64 of S, its low 48 bits as 12 hex digits: the handler version
-- lua_rt.c computes. 64-bit arithmetic in two 32-bit halves (doubles are exact).
local function handler_version(s)
  local hi, lo = 0xcbf29ce4, 0x84222325
  for i = 1, #s do
    lo = bxor(lo, s:byte(i)) % 4294967296
    -- h * (2^40 + 0x1b3) mod 2^64
    local l = lo * 0x1b3
    local carry = floor(l / 4294967296)
    hi = (hi * 0x1b3 + carry + (lo % 16777216) * 256) % 4294967296
    lo = l % 4294967296
  end
  return fmt("%04x%08x", hi % 65536, lo)
end

-- The trace id of a W3C traceparent header value, or nil (wr_trace_parse).
local function traceparent_id(tp)
  if type(tp) ~= "string" or #tp < 55 then
    return nil
  end
  local version, trace, span, flags = tp:match("^(%x%x)%-(%x+)%-(%x+)%-(%x%x)")
  if not version or #trace ~= 32 or #span ~= 16 or version == "ff"
      or (version == "00" and #tp ~= 55) or (#tp > 55 and tp:sub(56, 56) ~= "-") then
    return nil
  end
  for _, s in ipairs { version, trace, span, flags } do
    if s:find("[^0-9a-f]") then
      return nil
    end
  end
  if not trace:find("[^0]") or not span:find("[^0]") then
    return nil
  end
  return trace
end

-- Fail with "FN: unknown option 'k'" unless every key of OPTS is in KNOWN.
local function unknown_option(fn, opts, known)
  for k in pairs(opts) do
    if not known[k] then
      return fmt("%s: unknown option '%s'", fn, tostring(k))
    end
  end
  return nil
end

local function check_type(fn, name, v, want, allowed)
  if v ~= nil and not allowed[type(v)] then
    return fmt("%s: %s must be %s, got %s", fn, name, want, type(v))
  end
  return nil
end

local function check_count(fn, name, v, min)
  if v ~= nil and (type(v) ~= "number" or v ~= floor(v) or v < min or v == huge) then
    return fmt("%s: %s must be an integer of at least %d, got %s", fn, name, min, describe(v))
  end
  return nil
end

-- Seconds from a number of seconds or a duration string; nil, err otherwise.
local function seconds_of(fn, name, v)
  if type(v) == "number" then
    if not (v > 0) or v == huge then
      return nil, fmt("%s: %s must be a positive number of seconds, got %s", fn, name,
                      describe(v))
    end
    return v
  elseif type(v) == "string" then
    local ms = parse_duration(v)
    if not ms or ms == 0 then
      return nil, fmt("%s: %s '%s' is not a duration like 2s", fn, name, v)
    end
    return ms / 1000
  end
  return nil, fmt("%s: %s must be seconds or a duration like 2s, got %s", fn, name, type(v))
end

---------------------------------------------------------------------------
-- running handler code: deadline, phase, errors
---------------------------------------------------------------------------

-- Call FN(...) the way lua_rt.c calls handler code: in its own coroutine
-- under a deadline (CPU time) checked by a count hook, with the JIT off so
-- the hook fires in every loop. Once the deadline passed, the hook raises at
-- every instruction of the handler, so a pcall cannot swallow the timeout.
-- Returns ok, error value, timed_out.
local function guarded_call(timeout_ms, fn, ...)
  local n, args = select("#", ...), { ... }
  local co = co_create(function()
    return fn(unpack(args, 1, n))
  end)
  local outer = co_running()
  local deadline = os.clock() + timeout_ms / 1000
  local timed_out = false
  local function hook()
    if co_running() == outer then
      return -- the kit's own code, between resumes
    end
    if not timed_out then
      if os.clock() < deadline then
        return
      end
      timed_out = true
      sethook(hook, "", 1)
    end
    error(fmt(E.timeout, timeout_ms), 2)
  end
  local old_hook, old_mask, old_count = gethook()
  local jit_was_on = jit and jit.status()
  local dump = string_table.dump
  string_table.dump = nil -- as in the runtime's state, where the sandbox removed it
  if jit then
    jit.off()
    jit.flush()
  end
  sethook(hook, "", HOOK_EVERY)
  local ok, err = co_resume(co)
  if old_hook then
    sethook(old_hook, old_mask, old_count)
  else
    sethook()
  end
  if jit_was_on then
    jit.on()
  end
  string_table.dump = dump
  if ok and co_status(co) ~= "dead" then
    -- the handler yielded at its top level: from C that cannot happen, and
    -- LuaJIT names the line that called yield
    local where = getinfo(co, 1, "Sl")
    err = "attempt to yield across C-call boundary"
    if where and where.currentline and where.currentline > 0 then
      err = where.short_src .. ":" .. where.currentline .. ": " .. err
    end
    ok = false
  end
  return ok, err, timed_out
end

local THIS_FILE = getinfo(1, "S").source

-- Raise MSG at the handler's line, as the runtime's ctx functions do
-- (wr_lua_push_where in sidecar/src/lua/lua_rt.c): the nearest frame up the
-- stack that runs handler code (a Lua function with a current line, not the
-- kit's own and not a chunk named "=..."), past pcall, a breaker's call and
-- frames a tail call replaced; no position when there is none.
local function raise(msg)
  local level = 2
  while true do
    local info = getinfo(level, "Sl")
    if not info then
      error(msg, 0)
    end
    if info.source ~= THIS_FILE and (info.currentline or 0) > 0
        and info.source:sub(1, 1) ~= "=" then
      error(info.short_src .. ":" .. info.currentline .. ": " .. msg, 0)
    end
    level = level + 1
  end
end

-- "ctx.FN is not available ..." unless the phase allows FN, or nil.
local function phase_error(st, fn, allow_init)
  if st.phase == "handle" or (allow_init and st.phase == "init") then
    return nil
  end
  return fmt(E.phase, fn, st.phase == "init" and E.phase_init or E.phase_none)
end

---------------------------------------------------------------------------
-- the fake clock
---------------------------------------------------------------------------

local Clock = {}
Clock.__index = Clock

--- Move the fake clock forward.
-- @tparam number seconds how far (0 or more)
-- @treturn number the new time, seconds since the epoch
function Clock:advance(seconds)
  if type(seconds) ~= "number" or not (seconds >= 0) or seconds == huge then
    error(fmt("clock:advance(seconds): seconds must be a number of at least 0, got %s",
              type(seconds) == "number" and tostring(seconds) or type(seconds)), 2)
  end
  self.t = self.t + seconds
  return self.t
end

--- Set the fake clock.
-- @tparam number seconds seconds since the epoch
-- @treturn number the new time
function Clock:set(seconds)
  if type(seconds) ~= "number" or seconds ~= seconds or seconds == huge or seconds == -huge then
    error(fmt("clock:set(seconds): seconds must be a number, got %s",
              type(seconds) == "number" and tostring(seconds) or type(seconds)), 2)
  end
  self.t = seconds
  return self.t
end

--- The fake clock's time, unrounded.
-- @treturn number seconds since the epoch
function Clock:now()
  return self.t
end

---------------------------------------------------------------------------
-- ctx.publish, ctx.reject, ctx.retry, ctx.log, ctx.now
---------------------------------------------------------------------------

local function make_publish(ctx, st)
  return function(...)
    local err = phase_error(st, "publish", false)
    if err then
      raise(err)
    end
    local n = select("#", ...)
    local exchange, routing_key, body, opts = ...
    if n < 3 or n > 4 then
      raise(fmt(E.publish_args, n))
    end
    if type(exchange) ~= "string" then
      raise(fmt(E.publish_exchange, type(exchange)))
    end
    if type(routing_key) ~= "string" then
      raise(fmt(E.publish_routing_key, type(routing_key)))
    end
    if type(body) ~= "string" and type(body) ~= "table" then
      raise(fmt(E.publish_body, type(body)))
    end
    if n == 4 and opts ~= nil and type(opts) ~= "table" then
      raise(fmt(E.publish_opts, type(opts)))
    end
    if #ctx.published >= MAX_PUBLISHES then
      raise(fmt(E.publish_limit, MAX_PUBLISHES))
    end
    -- AMQP short strings, as the runtime checks them
    if #exchange > 255 or #routing_key > 255 then
      raise(fmt(E.publish_long, #exchange > 255 and "exchange" or "routing_key",
                #exchange > 255 and #exchange or #routing_key))
    end
    local content_type
    if type(body) == "table" then
      local ok, encoded = pcall(cjson.encode, body)
      if not ok then
        raise(fmt(E.publish_encode, tostring(encoded)))
      end
      body, content_type = encoded, "application/json"
    end
    local pub = {
      exchange = exchange,
      routing_key = routing_key,
      body = body,
      content_type = content_type,
      type = nil,
      headers = {},
      mandatory = false,
    }
    if type(opts) == "table" then
      local ct = opts.content_type
      if type(ct) == "string" then
        if #ct > 255 then raise(fmt(E.publish_long, "opts.content_type", #ct)) end
        pub.content_type = ct
      elseif ct ~= nil then
        raise(E.publish_content_type)
      end
      local t = opts.type
      if type(t) == "string" then
        if #t > 255 then raise(fmt(E.publish_long, "opts.type", #t)) end
        pub.type = t
      elseif t ~= nil then
        raise(E.publish_type)
      end
      pub.mandatory = opts.mandatory ~= nil and opts.mandatory ~= false
      local headers = opts.headers
      if type(headers) == "table" then
        local header_bytes = 0
        for k, v in pairs(headers) do
          local tv = type(v)
          if type(k) ~= "string" or (tv ~= "string" and tv ~= "number" and tv ~= "boolean") then
            raise(E.publish_header_value)
          end
          if #k > 255 then raise(fmt(E.publish_long, "a name in opts.headers", #k)) end
          pub.headers[k] = tv == "boolean" and (v and "true" or "false") or tostring(v)
          header_bytes = header_bytes + #k + #pub.headers[k]
          if header_bytes > 65536 then raise(fmt(E.publish_headers_big, 65536)) end
        end
      elseif headers ~= nil then
        raise(E.publish_headers)
      end
    end
    local list = ctx.published
    -- what the runtime copies out of the state, against max_publish_size
    local function size_of(p)
      local n = #p.exchange + #p.routing_key + #p.body + #(p.content_type or "") + #(p.type or "")
      for k, v in pairs(p.headers) do
        n = n + #k + #v
      end
      return n
    end
    local total = size_of(pub)
    for _, p in ipairs(list) do
      total = total + size_of(p)
    end
    if total > MAX_PUBLISH_BYTES then
      raise(fmt(E.publish_too_big, MAX_PUBLISH_BYTES))
    end
    pub.message_id = tostring(ctx.idempotency_key) .. ":" .. tostring(ctx.subscription) .. ":"
      .. (#list + 1)
    if is_json_type(pub.content_type) then
      pub.data = cjson_safe.decode(pub.body)
    end
    list[#list + 1] = pub
  end
end

local function make_reject(st)
  return function(...)
    local err = phase_error(st, "reject", false)
    if err then
      raise(err)
    end
    local reason = ...
    if type(reason) ~= "string" then
      raise(fmt(E.reject_reason, arg_type(select("#", ...), 1, reason)))
    end
    st.forced, st.forced_reason, st.forced_delay = "rejected", reason:sub(1, MAX_ERROR), nil
    error(SENTINEL)
  end
end

local function make_retry(st)
  return function(...)
    local err = phase_error(st, "retry", false)
    if err then
      raise(err)
    end
    local n = select("#", ...)
    local reason, opts = ...
    if type(reason) ~= "string" then
      raise(fmt(E.retry_reason, arg_type(n, 1, reason)))
    end
    local delay = nil
    if type(opts) == "table" then
      local d = opts.delay
      if type(d) == "number" then
        if not (d >= 0 and d <= 86400000) then -- NaN fails too
          raise(fmt(E.retry_delay_range, tostring(d)))
        end
        delay = floor(d)
      elseif type(d) == "string" then
        delay = parse_duration(d)
        if not delay then
          raise(fmt(E.retry_delay, d))
        end
      elseif d ~= nil then
        raise(E.retry_delay_type)
      end
    elseif opts ~= nil then
      raise(fmt(E.retry_opts, type(opts)))
    end
    if delay and delay < 0 then
      delay = nil -- a negative delay means the policy's, as -1 does
    end
    st.forced, st.forced_reason, st.forced_delay = "retry", reason:sub(1, MAX_ERROR), delay
    error(SENTINEL)
  end
end

local function make_log(ctx, level)
  return function(...)
    local n = select("#", ...)
    local msg, fields = ...
    if type(msg) ~= "string" and type(msg) ~= "number" then
      raise(fmt(E.log_msg, level, arg_type(n, 1, msg)))
    end
    if fields ~= nil and type(fields) ~= "table" then
      raise(fmt(E.log_fields, level, type(fields)))
    end
    local entry = { level = level, msg = tostring(msg) }
    local info = getinfo(2, "Sl")
    if info and info.currentline and info.currentline > 0 then
      entry.source = info.short_src .. ":" .. info.currentline
    end
    if fields ~= nil then
      -- the runtime encodes the fields when it logs: keep what they were then
      local ok, encoded = pcall(cjson.encode, fields)
      if ok then
        entry.fields = cjson.decode(encoded)
      else
        entry.fields_error = tostring(encoded)
      end
    end
    ctx.logs[#ctx.logs + 1] = entry
  end
end

---------------------------------------------------------------------------
-- ctx.http.request against fakes
---------------------------------------------------------------------------

local HTTP_OPTIONS = { method = true, url = true, headers = true, body = true, timeout = true,
                       raise = true }
local RESPONSE_FIELDS = { status = true, headers = true, body = true, reason = true,
                          error = true }

-- Check a fake response table; returns nil or what is wrong with it.
local function fake_problem(r)
  if type(r) ~= "table" then
    return "must be a table, got " .. type(r)
  end
  for k in pairs(r) do
    if not RESPONSE_FIELDS[k] then
      return fmt("has an unknown field '%s' (expected status, headers, body, reason, error)",
                 tostring(k))
    end
  end
  if r.error ~= nil then
    if type(r.error) ~= "string" then
      return "error must be a string, got " .. type(r.error)
    end
    return nil
  end
  local s = r.status
  if s ~= nil and (type(s) ~= "number" or s ~= floor(s) or s < 100 or s > 599) then
    return "status must be an integer from 100 to 599, got " .. describe(s)
  end
  if r.headers ~= nil and type(r.headers) ~= "table" then
    return "headers must be a table, got " .. type(r.headers)
  end
  if r.body ~= nil and type(r.body) ~= "string" and type(r.body) ~= "table" then
    return "body must be a string or a table, got " .. type(r.body)
  end
  if r.reason ~= nil and type(r.reason) ~= "string" then
    return "reason must be a string, got " .. type(r.reason)
  end
  return nil
end

-- Find and build the answer to REQ. Returns the response table, or nil and
-- the transport error.
local function fake_answer(st, req)
  local fakes = st.http
  local fake
  if type(fakes) == "function" then
    fake = fakes
  elseif type(fakes) == "table" then
    fake = fakes[req.method .. " " .. req.url]
  end
  if fake == nil then
    return nil, fmt(H.no_fake, req.method, req.url)
  end
  local r = fake
  if type(fake) == "function" then
    r = fake(deep_copy(req))
    if r == nil then
      return nil, fmt(H.no_fake, req.method, req.url)
    end
    local problem = fake_problem(r)
    if problem then
      error(fmt("testing: the fake for %s %s returned a response that %s", req.method, req.url,
                problem), 0)
    end
  end
  if r.error ~= nil then
    return nil, r.error
  end
  local res = { status = r.status or 200, headers = {}, body = "" }
  for k, v in pairs(r.headers or {}) do
    res.headers[tostring(k):lower()] = tostring(v)
  end
  if type(r.body) == "table" then
    res.body = cjson.encode(r.body)
    res.headers["content-type"] = res.headers["content-type"] or "application/json"
  elseif r.body ~= nil then
    res.body = r.body
  end
  -- lua_http.c's rule: application/json or any type ending in +json, non-empty
  local media = (res.headers["content-type"] or ""):match("^[^; ]*"):lower()
  if (media == "application/json" or (#media > 5 and media:sub(-5) == "+json"))
      and res.body ~= "" then
    res.json = (cjson_safe.decode(res.body))
  end
  return res, nil, r.reason
end

-- ctx.breaker(name): the runtime's breakers are shared by the whole process
-- and move with the results of calls; here each name's state is what the spec
-- says (testing.ctx{breakers = {payments = "open"}}, default "closed"). An
-- open breaker's call raises the runtime's error, which warren retries.
local BRK = testing.BREAKER_ERRORS
local function make_breaker(st)
  local objects = {}
  local function check_self(self, fn)
    if type(self) ~= "table" or not self.__name_of_breaker then
      raise(fmt(BRK.self, fn, fn))
    end
  end
  local function call(self, fn, ...)
    local perr = phase_error(st, "breaker(...):call")
    if perr then
      raise(perr)
    end
    check_self(self, "call")
    if type(fn) ~= "function" then
      raise(fmt(BRK.fn, type(fn) == "nil" and select("#", ...) == 0 and "no value"
        or type(fn)))
    end
    local state = (st.breakers or {})[self.name] or "closed"
    if state == "open" then
      raise(fmt(BRK.open, self.name))
    end
    return fn(...)
  end
  local function state(self)
    check_self(self, "state")
    return (st.breakers or {})[self.name] or "closed"
  end
  return function(name)
    if type(name) ~= "string" or #name == 0 or #name > 100 then
      raise(fmt(BRK.name, name == nil and "no value" or type(name)))
    end
    if not objects[name] then
      objects[name] = { __name_of_breaker = true, name = name, call = call, state = state }
    end
    return objects[name]
  end
end

--- Error texts of ctx.store (contract.lua's STORE_ERRORS, used by sidecar/src/lua/lua_store.c,
-- storebuf.c and decide.c). Arguments are checked in the runtime's order: the phase
-- (ERRORS.phase with "store.<fn>"), availability, the argument count, the key,
-- then the call's other arguments (set: ttl before value; hincrby: n before field).
-- @table STORE_ERRORS
testing.STORE_ERRORS = contract.STORE_ERRORS

local S = testing.STORE_ERRORS
local MAX_INT = 9007199254740992 -- 2^53
local KEY_MAX = LIMITS.store_key_max -- a key, store.prefix included
local KIND_NAME = { string = "a string", hash = "a hash", set = "a set" }

---------------------------------------------------------------------------
-- warren's own Lua files: the commit script and the model it runs over
---------------------------------------------------------------------------

-- The kit commits a message's ctx.store writes the way the sidecar does: with
-- the sidecar's commit script (sidecar/scripts/finish.lua), run over the
-- in-memory Redis of sidecar/lua/commit_model.lua (what `warren exec` runs
-- too), found in SHARE_DIR (see share_dir above).
local warren_files
local function find_warren_files()
  if warren_files then
    return warren_files
  end
  local model = assert(loadfile(SHARE_DIR .. "/lua/commit_model.lua"))()
  local parts = {}
  for i, name in ipairs { "record.lua", "finish.lua" } do
    local sh = assert(io.open(SHARE_DIR .. "/scripts/" .. name, "rb"))
    parts[i] = sh:read("*a")
    sh:close()
  end
  warren_files = { model = model, finish = parts[1] .. "\n" .. parts[2] }
  return warren_files
end

---------------------------------------------------------------------------
-- ctx.store: storebuf.c's write buffer and read overlay, in Lua
---------------------------------------------------------------------------

-- A store value as the runtime stores it: strings as they are, whole numbers
-- as "%.0f", other numbers as LuaJIT prints them.
local function store_text(v)
  if type(v) == "number" then
    if v == floor(v) and math.abs(v) < MAX_INT then
      return fmt("%.0f", v)
    end
    return tostring(v)
  end
  return v
end

-- An entry of the committed state from the seed shape: "v" or a number for a
-- string, {member, ...} a set, {field = value} a hash; nil for false or an
-- empty table (no key, as in Redis). Returns entry, or nil and err.
local function seed_entry(fn, k, v)
  if v == false then
    return nil
  elseif type(v) == "string" or type(v) == "number" then
    return { kind = "string", v = store_text(v) }
  elseif type(v) == "table" and #v > 0 then
    local set = {}
    for _, m in ipairs(v) do
      set[store_text(m)] = true
    end
    return { kind = "set", v = set }
  elseif type(v) == "table" then
    local h = {}
    for f, x in pairs(v) do
      h[store_text(f)] = store_text(x)
    end
    if next(h) == nil then
      return nil
    end
    return { kind = "hash", v = h }
  end
  return nil, fmt("%s: store.%s must be a string, a number or a table, got %s", fn, k, type(v))
end

local function seed_into(fn, data, exp, seed)
  for k, v in pairs(seed or {}) do
    if type(k) ~= "string" then
      return fmt("%s: store keys must be strings, got %s", fn, type(k))
    end
    local e, err = seed_entry(fn, k, v)
    if err then
      return err
    end
    data[k] = e
    exp[k] = nil
  end
  return nil
end

-- ctx.stored: the committed state as plain tables (strings; hashes field -> value;
-- sets member -> true), expired keys left out.
local function stored_view(st)
  local s, out = st.store, {}
  for k, e in pairs(s.data) do
    local x = s.exp[k]
    if not (x and x <= st.clock.t) then
      if e.kind == "string" then
        out[k] = e.v
      else
        local t = {}
        for f, v in pairs(e.v) do
          t[f] = v
        end
        out[k] = t
      end
    end
  end
  return out
end

-- Redis's integers (string2ll) and int64 arithmetic, from the commit model.
local function ll_parse(text)
  return find_warren_files().model._ll_of(text)
end
local function ll_add(a, b)
  local MAXLL, MINLL = 9223372036854775807LL, -9223372036854775807LL - 1
  a, b = a + 0LL, b + 0LL
  if (b > 0 and a > MAXLL - b) or (b < 0 and a < MINLL - b) then
    return nil
  end
  return a + b
end
local function ll_text(v)
  return (tostring(v + 0LL):gsub("LL$", ""))
end

-- What the committed state answers to a read command (wr_sb_fetch): Redis's
-- view of KEY (without the prefix), at the fake clock's time.
local function fetch(st, cmd, k, arg)
  local s = st.store
  local e = s.data[k]
  local x = s.exp[k]
  if e and x and x <= st.clock.t then
    e = nil
  end
  local want = (cmd == "GET" and "string") or ((cmd == "HGET" or cmd == "HGETALL") and "hash")
    or ((cmd == "SMEMBERS" or cmd == "SISMEMBER") and "set") or nil
  if e and want and e.kind ~= want then
    return nil, S.wrongtype
  end
  local r = { num = 0, items = {} }
  if cmd == "GET" then
    r.present, r.str = e ~= nil, e and e.v
  elseif cmd == "HGET" then
    local v = e and e.v[arg]
    r.present, r.str = v ~= nil, v
  elseif cmd == "HGETALL" then
    for f, v in pairs(e and e.v or {}) do
      r.items[#r.items + 1] = f
      r.items[#r.items + 1] = v
    end
  elseif cmd == "SMEMBERS" then
    for m in pairs(e and e.v or {}) do
      r.items[#r.items + 1] = m
    end
  elseif cmd == "SISMEMBER" then
    r.num = e and e.v[arg] and 1 or 0
  elseif cmd == "EXISTS" then
    r.num = e and 1 or 0
  elseif cmd == "PTTL" then
    r.num = not e and -2 or not x and -1 or floor(x * 1000 + 0.5) - floor(st.clock.t * 1000)
  end
  return r
end

local WANT_KIND = { incrby = "string", hset = "hash", hdel = "hash", hincrby = "hash",
                    sadd = "set", srem = "set" }

-- The message's buffer: the writes in order, the reads to check at commit,
-- and per key what the writes say about it (storebuf.c's skey: kind; state
-- "unknown" (Redis still counts, the overlay on top), "absent" (deleted
-- here) or "known"; a delta over the base; the TTL; fields and members).
local function new_buffer()
  return { keys = {}, writes = {}, guards = {}, guarded = {} }
end

local function buf_key(b, k)
  local e = b.keys[k]
  if not e then
    e = { state = "unknown", delta = 0, f = {} }
    b.keys[k] = e
  end
  return e
end

-- A field entry, created as storebuf's get_field does (state "set", no value).
local function buf_field(e, name)
  local f = e.f[name]
  if not f then
    f = { st = "set" }
    e.f[name] = f
  end
  return f
end

local function create_known(e)
  if e.state == "absent" then
    e.state, e.ttl_known, e.ttl_ms = "known", true, -1
  end
end

-- Apply one write to the overlay of E (storebuf.c's overlay); nil or the error.
local function overlay(e, full, op, a, bv, num)
  local want = WANT_KIND[op]
  if want and e.kind and e.kind ~= want then
    return fmt(S.kind, full, KIND_NAME[e.kind])
  end
  if op == "set" then
    e.f, e.str, e.kind, e.state = {}, a, "string", "known"
    e.has_delta, e.delta, e.ttl_known, e.ttl_ms = false, 0, true, num > 0 and num or -1
    return nil
  elseif op == "del" then
    e.f, e.str, e.kind, e.state = {}, nil, nil, "absent"
    e.has_delta, e.delta, e.ttl_known, e.ttl_ms = false, 0, true, -2
    return nil
  elseif op == "expire" then
    if e.state ~= "absent" then
      e.ttl_known, e.ttl_ms = true, num
    end
    return nil
  elseif op == "incrby" then
    e.kind = "string"
    if e.state == "known" then
      local cur = ll_parse(e.str)
      if not cur then
        return S.not_integer
      end
      local nxt = ll_add(cur, num)
      if not nxt then
        return S.overflow
      end
      e.str = ll_text(nxt)
    elseif e.state == "absent" then
      create_known(e)
      e.str = ll_text(num)
    else
      local d = ll_add(e.delta, num)
      if not d then
        return S.overflow
      end
      e.delta, e.has_delta = d, true
    end
    return nil
  end
  e.kind = want
  if op == "hdel" or op == "srem" then
    if e.state ~= "absent" then
      local f = buf_field(e, a)
      f.st, f.val = "del", nil
    end
    return nil
  end
  create_known(e)
  local f = buf_field(e, a)
  if op == "sadd" then
    f.st = "set"
  elseif op == "hset" then
    f.st, f.val = "set", bv
  elseif f.st == "set" and f.val ~= nil then -- hincrby over a value set here
    local cur = ll_parse(f.val)
    if not cur then
      return S.hash_not_integer
    end
    local nxt = ll_add(cur, num)
    if not nxt then
      return S.overflow
    end
    f.val = ll_text(nxt)
  elseif f.st == "del" or e.state == "known" then
    f.st, f.val = "set", ll_text(num)
  else
    if f.st == "delta" then
      local d = ll_add(f.delta, num)
      if not d then
        return S.overflow
      end
      f.delta = d
    else
      f.delta = num
    end
    f.st = "delta"
  end
  return nil
end

-- Fetch CMD's base from the committed state and keep what it saw as a guard
-- for the commit (not PTTL: a TTL runs down by itself). Raises as the
-- runtime does when Redis refuses the read.
local function fetch_base(st, fn, cmd, k, arg)
  local r, err = fetch(st, cmd, k, arg or "")
  if not r then
    raise(fmt("ctx.store.%s: %s", fn, err))
  end
  local b = st.store.buf
  local id = cmd .. "\0" .. k .. "\0" .. (arg or "")
  if cmd ~= "PTTL" and not b.guarded[id] then
    b.guarded[id] = true
    local items
    if cmd == "GET" or cmd == "HGET" then
      items = r.present and { r.str } or {}
    elseif cmd == "EXISTS" or cmd == "SISMEMBER" then
      items = { r.num ~= 0 and "1" or "0" }
    else
      items = { unpack(r.items) }
    end
    b.guards[#b.guards + 1] = { cmd = cmd, key = k, arg = arg or "", items = items }
  end
  return r
end

-- base + delta as text (storebuf's base_plus), or raise as it reports.
local function base_plus(fn, base, present, delta)
  local v = 0LL
  if present then
    v = ll_parse(base)
    if not v then
      raise(fmt("ctx.store.%s: %s", fn, S.not_integer))
    end
  end
  local sum = ll_add(v, delta)
  if not sum then
    raise(fmt("ctx.store.%s: %s", fn, S.overflow))
  end
  return ll_text(sum)
end

-- A read as wr_storebuf_read answers it: {present, str, num, items}.
local function buf_read(st, fn, cmd, k, arg)
  local s = st.store
  local e = s.buf.keys[k]
  if not e then
    return fetch_base(st, fn, cmd, k, arg)
  end
  local function wrongtype(want)
    if e.kind and e.kind ~= want then
      raise(fmt("ctx.store.%s: " .. S.kind, fn, s.prefix .. k, KIND_NAME[e.kind]))
    end
  end
  if cmd == "GET" then
    wrongtype("string")
    if e.state == "absent" then
      return { num = 0 }
    elseif e.state == "known" then
      return { present = true, str = e.str }
    end
    local base = fetch_base(st, fn, "GET", k)
    if not e.has_delta then
      return base
    end
    return { present = true, str = base_plus(fn, base.str, base.present, e.delta) }
  elseif cmd == "HGET" or cmd == "SISMEMBER" then
    local hash = cmd == "HGET"
    wrongtype(hash and "hash" or "set")
    if e.state == "absent" then
      return { num = 0 }
    end
    local f = e.f[arg]
    if f and f.st ~= "delta" then
      local present = f.st == "set"
      return { present = present, num = present and 1 or 0,
               str = hash and present and f.val or nil }
    end
    if not f and e.state == "known" then
      return { num = 0 }
    end
    local base = fetch_base(st, fn, cmd, k, arg)
    if not f then
      return base
    end
    return { present = true, str = base_plus(fn, base.str, base.present, f.delta) }
  elseif cmd == "HGETALL" or cmd == "SMEMBERS" then
    local hash = cmd == "HGETALL"
    wrongtype(hash and "hash" or "set")
    if e.state == "absent" then
      return { items = {} }
    end
    if e.kind == nil then
      return fetch_base(st, fn, cmd, k) -- only an expire buffered
    end
    local base = { items = {} }
    if e.state == "unknown" then
      base = fetch_base(st, fn, cmd, k)
    end
    local out, seen, step = {}, {}, hash and 2 or 1
    for i = 1, #base.items, step do
      local name = base.items[i]
      local f = e.f[name]
      seen[name] = true
      if not (f and f.st == "del") then
        out[#out + 1] = name
        if hash then
          local v = base.items[i + 1]
          if f and f.st == "set" then
            v = f.val
          elseif f and f.st == "delta" then
            v = base_plus(fn, v, true, f.delta)
          end
          out[#out + 1] = v
        end
      end
    end
    for name, f in pairs(e.f) do
      if f.st ~= "del" and not seen[name] then
        out[#out + 1] = name
        if hash then
          out[#out + 1] = f.st == "delta" and ll_text(f.delta) or f.val
        end
      end
    end
    return { items = out }
  elseif cmd == "EXISTS" then
    if e.state == "absent" then
      return { num = 0 }
    end
    if e.kind == "string" and (e.state == "known" or e.has_delta) then
      return { num = 1 }
    end
    if e.kind == "hash" or e.kind == "set" then
      for _, f in pairs(e.f) do
        if f.st ~= "del" then
          return { num = 1 }
        end
      end
      if e.state == "known" then
        return { num = 0 }
      end
      local m = buf_read(st, fn, e.kind == "hash" and "HGETALL" or "SMEMBERS", k)
      return { num = #m.items > 0 and 1 or 0 }
    end
    return fetch_base(st, fn, "EXISTS", k)
  end
  -- PTTL
  if buf_read(st, fn, "EXISTS", k).num == 0 then
    return { num = -2 }
  end
  if e.ttl_known then
    return { num = e.ttl_ms }
  end
  local base = fetch_base(st, fn, "PTTL", k)
  return { num = base.num == -2 and -1 or base.num }
end

-- ctx.store's argument checks (lua_store.c's) and its write buffer, for the
-- functions make_store builds: raising the runtime's texts.
local function store_checks(st)
  local s = st.store
  local a = {}
  function a.begin(fn, min, max, usage, n)
    local perr = phase_error(st, "store." .. fn, false)
    if perr then
      raise(perr)
    end
    if not s.enabled then
      raise(fmt(S.unavailable, fn))
    end
    if min and (n < min or n > max) then
      if min == max then
        raise(fmt(S.nargs, usage, min, min == 1 and "" or "s", n))
      end
      raise(fmt(S.nargs_range, usage, min, max, n))
    end
  end
  function a.key_of(fn, n, k)
    if type(k) ~= "string" then
      raise(fmt(S.key, fn, arg_type(n, 1, k)))
    end
    if #k == 0 or #s.prefix + #k > KEY_MAX then
      raise(fmt(S.key_len, fn, KEY_MAX - #s.prefix, #k))
    end
    return k
  end
  function a.value_of(fn, n, i, v, what)
    if type(v) ~= "string" and type(v) ~= "number" then
      raise(fmt(S.value, fn, what, arg_type(n, i, v)))
    end
    local text = store_text(v)
    if #text > s.max_value_bytes then
      raise(fmt(S.value_len, fn, what, #text, s.max_value_bytes))
    end
    return text
  end
  function a.int_of(fn, n, i, v, what)
    if type(v) ~= "number" then
      raise(fmt(S.int, fn, what, arg_type(n, i, v)))
    end
    if v ~= floor(v) or math.abs(v) >= MAX_INT then
      raise(fmt(S.int_range, fn, what, tostring(v)))
    end
    return v
  end
  -- a TTL in seconds as milliseconds, at least 1 (lua_store.c's ttl_arg)
  function a.ttl_of(fn, n, i, v)
    if type(v) ~= "number" or not (v > 0) or v > 10 * 365 * 86400 then
      raise(fmt(S.ttl, fn, type(v) == "number" and tostring(v) or arg_type(n, i, v)))
    end
    local ms = floor(v * 1000 + 0.5)
    return ms < 1 and 1 or ms
  end
  -- buffer one write (wr_storebuf_write)
  function a.write(fn, op, k, a, bv, num)
    local b = s.buf
    if #b.writes >= s.max_writes then
      raise(fmt("ctx.store.%s: " .. S.max_writes, fn, s.max_writes))
    end
    local err = overlay(buf_key(b, k), s.prefix .. k, op, a, bv, num or 0)
    if err then
      raise(fmt("ctx.store.%s: %s", fn, err))
    end
    b.writes[#b.writes + 1] = { op = op, key = k, a = a or "", b = bv or "", num = num or 0 }
  end
  return a
end

-- ctx.store's reads into STORE: the buffer's own writes over the data.
local function add_store_reads(store, st, a)
  local begin, key_of, value_of = a.begin, a.key_of, a.value_of
  function store.get(...)
    local n = select("#", ...)
    begin("get", 1, 1, "get(key)", n)
    local r = buf_read(st, "get", "GET", key_of("get", n, (...)))
    return r.present and r.str or nil
  end
  function store.hget(...)
    local n = select("#", ...)
    begin("hget", 2, 2, "hget(key, field)", n)
    local k, f = ...
    key_of("hget", n, k)
    f = value_of("hget", n, 2, f, "field")
    local r = buf_read(st, "hget", "HGET", k, f)
    return r.present and r.str or nil
  end
  function store.hgetall(...)
    local n = select("#", ...)
    begin("hgetall", 1, 1, "hgetall(key)", n)
    local r = buf_read(st, "hgetall", "HGETALL", key_of("hgetall", n, (...)))
    local out = {}
    for i = 1, #r.items, 2 do
      out[r.items[i]] = r.items[i + 1]
    end
    return out
  end
  function store.smembers(...)
    local n = select("#", ...)
    begin("smembers", 1, 1, "smembers(key)", n)
    local r = buf_read(st, "smembers", "SMEMBERS", key_of("smembers", n, (...)))
    return { unpack(r.items) }
  end
  function store.sismember(...)
    local n = select("#", ...)
    begin("sismember", 2, 2, "sismember(key, member)", n)
    local k, m = ...
    key_of("sismember", n, k)
    m = value_of("sismember", n, 2, m, "member")
    return buf_read(st, "sismember", "SISMEMBER", k, m).num ~= 0
  end
  function store.exists(...)
    local n = select("#", ...)
    begin("exists", 1, 1, "exists(key)", n)
    return buf_read(st, "exists", "EXISTS", key_of("exists", n, (...))).num ~= 0
  end
  function store.ttl(...)
    local n = select("#", ...)
    begin("ttl", 1, 1, "ttl(key)", n)
    local ms = buf_read(st, "ttl", "PTTL", key_of("ttl", n, (...))).num
    return ms < 0 and ms or floor((ms + 500) / 1000)
  end
end

-- ctx.store's writes into STORE: buffered, applied when the run succeeds.
local function add_store_writes(store, a)
  local begin, key_of, value_of, int_of, ttl_of, write =
    a.begin, a.key_of, a.value_of, a.int_of, a.ttl_of, a.write
  function store.set(...)
    local n = select("#", ...)
    begin("set", 2, 3, "set(key, value [, ttl])", n)
    local k, v, ttl = ...
    key_of("set", n, k)
    local ms = 0
    if ttl ~= nil then
      ms = ttl_of("set", n, 3, ttl)
    end
    v = value_of("set", n, 2, v, "value")
    write("set", "set", k, v, nil, ms)
  end
  function store.del(...)
    local n = select("#", ...)
    begin("del", 1, 1, "del(key)", n)
    write("del", "del", key_of("del", n, (...)))
  end
  function store.incrby(...)
    local n = select("#", ...)
    begin("incrby", 2, 2, "incrby(key, n)", n)
    local k, by = ...
    key_of("incrby", n, k)
    write("incrby", "incrby", k, nil, nil, int_of("incrby", n, 2, by, "n"))
  end
  function store.expire(...)
    local n = select("#", ...)
    begin("expire", 2, 2, "expire(key, ttl)", n)
    local k, ttl = ...
    key_of("expire", n, k)
    write("expire", "expire", k, nil, nil, ttl_of("expire", n, 2, ttl))
  end
  function store.hset(...)
    local n = select("#", ...)
    begin("hset", 3, 3, "hset(key, field, value)", n)
    local k, f, v = ...
    key_of("hset", n, k)
    f = value_of("hset", n, 2, f, "field")
    v = value_of("hset", n, 3, v, "value")
    write("hset", "hset", k, f, v)
  end
  function store.hdel(...)
    local n = select("#", ...)
    begin("hdel", 2, 2, "hdel(key, field)", n)
    local k, f = ...
    key_of("hdel", n, k)
    write("hdel", "hdel", k, value_of("hdel", n, 2, f, "field"))
  end
  function store.hincrby(...)
    local n = select("#", ...)
    begin("hincrby", 3, 3, "hincrby(key, field, n)", n)
    local k, f, by = ...
    key_of("hincrby", n, k)
    by = int_of("hincrby", n, 3, by, "n")
    f = value_of("hincrby", n, 2, f, "field")
    write("hincrby", "hincrby", k, f, nil, by)
  end
  local function members(fn, ...)
    local n = select("#", ...)
    begin(fn, nil, nil, nil, n)
    if n < 2 then
      raise(fmt(S.members, fn, n))
    end
    local k = ...
    key_of(fn, n, k)
    local ms = {}
    for i = 2, n do
      ms[#ms + 1] = value_of(fn, n, i, (select(i, ...)), "member")
    end
    for _, m in ipairs(ms) do
      write(fn, fn, k, m)
    end
  end
  function store.sadd(...)
    return members("sadd", ...)
  end
  function store.srem(...)
    return members("srem", ...)
  end
end

local function make_store(st)
  local a = store_checks(st)
  local store = {}
  add_store_reads(store, st, a)
  add_store_writes(store, a)
  return store
end

-- Before a run: an empty buffer.
local function store_begin(st)
  st.store.buf = new_buffer()
end

-- After a run: what other messages committed meanwhile (AT_COMMIT, the seed
-- shape, false deleting a key) lands first; then, when the run was ok and
-- wrote something, the commit script decides, as the sidecar's does: returns
-- nil (nothing to commit), "applied", or "refused"/"conflict"/"failed" and why.
local function store_end(ctx, st, ok, at_commit)
  local s = st.store
  local b = s.buf
  s.buf = new_buffer()
  if at_commit then
    local err = seed_into("testing.run", s.data, s.exp, at_commit)
    if err then
      error(err, 3)
    end
  end
  local result, why
  if ok and #b.writes > 0 then
    local files = find_warren_files()
    result, why = files.model.commit(files.finish, {
      db = s.data, exp = s.exp, prefix = s.prefix,
      now = function() return st.clock.t end,
    }, { writes = b.writes, guards = b.guards })
  end
  ctx.stored = stored_view(st)
  return result, why
end

-- ctx.http.request's options, checked as lua_http.c checks them: the method,
-- whether a status of 500 or more raises, the timeout in seconds (nil: the
-- default) and the body as sent (a table encoded as JSON).
local function request_options(o)
  local url = o.url
  if type(url) ~= "string" then
    raise(fmt(H.url, type(url)))
  end
  if not url:lower():match("^https?://[^/]") then
    raise(fmt(H.url_scheme, testing.safe_url(url)))
  end
  if url:find("[%c ]") then
    raise(fmt(H.url_chars, testing.safe_url(url)))
  end
  local method = o.method
  if method == nil then
    method = "GET"
  elseif type(method) ~= "string" then
    raise(fmt(H.method, type(method)))
  elseif not method:match("^[A-Z]+$") then
    raise(fmt(H.method_token, method))
  end
  local raises = o.raise
  if raises == nil then
    raises = true
  elseif type(raises) ~= "boolean" then
    raise(fmt(H.raise, type(raises)))
  end
  local timeout = o.timeout
  if type(timeout) == "number" then
    if not (timeout > 0) or timeout == huge then
      raise(fmt(H.timeout_range, tostring(timeout)))
    end
  elseif type(timeout) == "string" then
    local ms = parse_duration(timeout)
    if not ms then
      raise(fmt(H.timeout_duration, timeout))
    elseif ms == 0 then
      raise(fmt(H.timeout_range, timeout))
    end
    timeout = ms / 1000
  elseif timeout ~= nil then
    raise(fmt(H.timeout, type(timeout)))
  end
  local body = o.body
  if type(body) == "table" then
    local ok, encoded = pcall(cjson.encode, body)
    if not ok then
      raise(fmt(H.body_json, tostring(encoded)))
    end
    body = encoded
  elseif body ~= nil and type(body) ~= "string" then
    raise(fmt(H.body, type(body)))
  end
  return url, method, raises, timeout, body
end

-- The headers sent: the handler's, checked, plus Content-Type for a table body
-- and, unless the handler set one, the message's trace as a new span.
local function request_headers(ctx, st, o)
  local headers, has_ct, has_tp = {}, false, false
  if o.headers ~= nil then
    if type(o.headers) ~= "table" then
      raise(fmt(H.headers, type(o.headers)))
    end
    for k, v in pairs(o.headers) do
      if type(k) ~= "string" then
        raise(fmt(H.header_name, type(k)))
      end
      if type(v) ~= "string" and type(v) ~= "number" then
        raise(fmt(H.header_value, k, type(v)))
      end
      v = tostring(v)
      if k:find("[\r\n:]") or v:find("[\r\n]") then
        raise(fmt(H.header_chars, k))
      end
      if #k + 2 + #v > testing.HTTP_MAX_HEADER_LINE then
        raise(fmt(H.header_size, k, testing.HTTP_MAX_HEADER_LINE))
      end
      headers[k] = v
      has_ct = has_ct or k:lower() == "content-type"
      has_tp = has_tp or k:lower() == "traceparent"
    end
  end
  if type(o.body) == "table" and not has_ct then
    headers["Content-Type"] = "application/json"
  end
  if not has_tp and ctx.trace_id then
    -- the runtime sends the message's trace along, as a new span
    st.spans = (st.spans or 0) + 1
    headers.traceparent = fmt("00-%s-%016x-01", ctx.trace_id, st.spans * 2 + 1)
  end
  return headers
end

local function make_http_request(ctx, st)
  return function(...)
    local err = phase_error(st, "http.request", false)
    if err then
      raise(err)
    end
    local o = ...
    if type(o) ~= "table" then
      raise(fmt(H.args, arg_type(select("#", ...), 1, o)))
    end
    for k in pairs(o) do
      if not HTTP_OPTIONS[k] then
        raise(fmt(H.option, tostring(k)))
      end
    end
    local url, method, raises, timeout, body = request_options(o)
    local headers = request_headers(ctx, st, o)

    -- body: as the handler gave it (a table stays a table, to compare with
    -- assert.same); body_text: the bytes sent (a table encoded as JSON)
    local given = o.body
    if type(given) == "table" then
      given = deep_copy(given)
    end
    local req = { method = method, url = url, headers = headers, body = given,
                  body_text = body, timeout = timeout, raise = raises }
    ctx.http_calls[#ctx.http_calls + 1] = req
    local res, terr, reason = fake_answer(st, req)
    if not res then
      local msg = fmt(H.transport, method, testing.safe_url(url), terr)
      if raises then
        raise(msg)
      end
      return nil, msg
    end
    if res.status >= 500 and raises then
      if reason then
        raise(fmt(H.status_reason, method, testing.safe_url(url), res.status, reason))
      end
      raise(fmt(H.status, method, testing.safe_url(url), res.status))
    end
    return res
  end
end

---------------------------------------------------------------------------
-- the public API
---------------------------------------------------------------------------

local EVENT_OPTIONS = {
  id = true, type = true, data = true, body = true, headers = true, routing_key = true,
  exchange = true, content_type = true, attempt = true, redelivered = true, timestamp = true,
  version = true,
}

--- Build an event table shaped like the runtime's.
-- Fields the runtime leaves out when empty (`id`, `type`, `version`,
-- `content_type`, `timestamp`, `data` for non-JSON messages) are left out
-- here too. `data` is what the handler would get from decoding the body: a
-- JSON round trip of the `data` given (so `nil` fields vanish, `cjson.null`
-- stays). An event whose body the runtime would refuse (empty, or not JSON
-- under a JSON content type) is still built; testing.run reports it
-- `invalid` without running the handler, as the sidecar does.
-- @tparam[opt] table opts
--   `id` (default "test-<n>"; "" for none), `type` (default: the routing key),
--   `data` (default {}; encoded as the body) or `body` (a string; not both),
--   `headers` (table), `routing_key` (default: the type, else ""),
--   `exchange` (default ""), `content_type` (default none, i.e. JSON),
--   `attempt` (default 1 + the `x-warren-attempt` header, else 1),
--   `redelivered` (default false), `timestamp` (seconds), `version` (default:
--   the `version` header; given, it is also put in the headers).
-- @treturn table the event
function testing.event(opts)
  if opts == nil then
    opts = {}
  elseif type(opts) ~= "table" then
    error(fmt("testing.event(opts): opts must be a table, got %s", type(opts)), 2)
  end
  local fn = "testing.event"
  local STR = { string = true }
  local err = unknown_option(fn, opts, EVENT_OPTIONS)
    or check_type(fn, "id", opts.id, "a string", STR)
    or check_type(fn, "type", opts.type, "a string", STR)
    or check_type(fn, "body", opts.body, "a string", STR)
    or check_type(fn, "headers", opts.headers, "a table", { table = true })
    or check_type(fn, "routing_key", opts.routing_key, "a string", STR)
    or check_type(fn, "exchange", opts.exchange, "a string", STR)
    or check_type(fn, "content_type", opts.content_type, "a string", STR)
    or check_count(fn, "attempt", opts.attempt, 1)
    or check_type(fn, "redelivered", opts.redelivered, "a boolean", { boolean = true })
    or check_type(fn, "timestamp", opts.timestamp, "a number", { number = true })
    or check_type(fn, "version", opts.version, "a string or a number",
                  { string = true, number = true })
  if not err and opts.data ~= nil and opts.body ~= nil then
    err = "testing.event: pass data or body, not both"
  end
  local json = is_json_type(opts.content_type)
  if not err and not json and opts.body == nil then
    err = fmt("testing.event: a message of content type '%s' needs a body (data is for JSON)",
              opts.content_type)
  end
  if err then
    error(err, 2)
  end

  local ev = {}
  local id = opts.id
  if id == nil then
    event_count = event_count + 1
    id = "test-" .. event_count
  end
  if id ~= "" then
    ev.id = id
  end
  ev.routing_key = opts.routing_key or opts.type or ""
  ev.exchange = opts.exchange or ""
  local t = opts.type or ev.routing_key
  if t ~= "" then
    ev.type = t
  end
  local headers = deep_copy(opts.headers or {})
  if opts.version ~= nil then
    headers.version = opts.version
  end
  local v = headers.version
  if type(v) == "string" and v ~= "" then
    ev.version = v
  elseif type(v) == "number" and v == floor(v) then
    ev.version = fmt("%d", v)
  end
  ev.headers = headers
  if opts.content_type ~= nil and opts.content_type ~= "" then
    ev.content_type = opts.content_type
  end
  local body = opts.body
  if body == nil then
    local data = opts.data
    if data == nil then
      data = {}
    end
    local ok, encoded = pcall(cjson.encode, data)
    if not ok then
      error(fmt("testing.event: data cannot be encoded as JSON: %s", tostring(encoded)), 2)
    end
    body = encoded
  end
  ev.body = body
  if opts.timestamp ~= nil and opts.timestamp ~= 0 then
    ev.timestamp = opts.timestamp
  end
  ev.redelivered = opts.redelivered or false
  local attempt = opts.attempt
  if attempt == nil then
    local n = tonumber(headers["x-warren-attempt"])
    attempt = (n and n > 0 and n < 1000000 and n == floor(n)) and n + 1 or 1
  end
  ev.attempt = attempt
  if body == "" then
    invalid[ev] = { reason = "empty-body", error = E.empty_body }
  elseif json then
    local ok, data = pcall(cjson.decode, body)
    if ok then
      ev.data = data
    else
      invalid[ev] = { reason = "invalid-json", error = fmt(E.invalid_json, tostring(data)) }
    end
  end
  return ev
end

---------------------------------------------------------------------------
-- the real config, through the warren binary
---------------------------------------------------------------------------

-- What the config decides (the idempotency key's source, attempts, delay
-- queues, timeouts, the store's prefix and limits), what the worker makes of
-- a message before its handler runs (invalid, missing key, body too large)
-- and the decision it takes after (ack, retry through which delay queue, DLQ
-- with which reason) are answered by `warren exec` itself (--envelope and
-- --result), not re-implemented here: the kit parses no YAML and keeps no copy
-- of those rules. The binary is $WARREN_BIN, else `warren` on the PATH.

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function read_all(path)
  local fh = io.open(path, "rb")
  if not fh then
    return ""
  end
  local s = fh:read("*a")
  fh:close()
  return s
end

-- Run `warren exec ARGS...` and decode the JSON it prints. Returns the table
-- and the exit status, or raises (at LEVEL) with what warren said.
local function warren_exec(fn, level, args)
  local bin = os.getenv("WARREN_BIN")
  if not bin or bin == "" then
    bin = "warren"
  end
  local errfile = os.tmpname()
  local parts = { shell_quote(bin), "exec" }
  for _, a in ipairs(args) do
    parts[#parts + 1] = shell_quote(a)
  end
  local cmd = table.concat(parts, " ") .. " 2>" .. shell_quote(errfile) .. "; echo \"rc=$?\""
  local p = io.popen(cmd)
  local out = p:read("*a")
  p:close()
  local stderr = read_all(errfile)
  os.remove(errfile)
  local body, rc = out:match("^(.-)\n?rc=(%d+)%s*$")
  rc = tonumber(rc)
  local ok, j = pcall(cjson.decode, body or "")
  if rc == nil or rc > 1 or not ok or type(j) ~= "table" then
    local said = stderr:gsub("%s+$", "")
    if said == "" then
      said = "exit status " .. tostring(rc) .. (rc == 127 and " (is warren installed? set "
                                                   .. "WARREN_BIN to the binary)" or "")
    end
    error(fmt("%s: warren exec %s: %s", fn, table.concat(args, " "), said), level + 1)
  end
  return j, rc
end

local subscriptions = {} -- config path .. "\0" .. name -> settings

--- A subscription's settings as the sidecar resolves them from the config
-- (defaults and inheritance included), read by `warren exec --envelope`:
-- `subscription`, `queue`, `dlq`, `handler` (absolute path),
-- `handler_version` (the sidecar's: the file and the modules beside it),
-- `max_attempts`, `handler_timeout_ms`, `max_body_size`, `idempotency`
-- (enabled), `idempotency_key` (its source: "message_id", "header:NAME" or
-- "json:PATH"), `store_prefix`, `store_max_writes`, `store_max_value_bytes`
-- and `retry_queues` (the delay queues' names).
-- @tparam string config the YAML file (as `warren -c` takes it)
-- @tparam string name the subscription's name
-- @treturn table the settings (a copy)
function testing.subscription(config, name)
  if type(config) ~= "string" or type(name) ~= "string" then
    error(fmt("testing.subscription(config, name): config and name must be strings, got %s "
              .. "and %s", type(config), type(name)), 2)
  end
  local id = config .. "\0" .. name
  if not subscriptions[id] then
    subscriptions[id] = warren_exec("testing.subscription", 2,
                                    { "-c", config, "--subscription", name, "--envelope" })
  end
  return deep_copy(subscriptions[id])
end

-- The event as `warren exec`'s event file (evfile.h) holds it.
local function event_file(fn, ev)
  local headers = {}
  for k, v in pairs(type(ev.headers) == "table" and ev.headers or {}) do
    local t = type(v)
    if t ~= "string" and t ~= "number" and t ~= "boolean" then
      error(fmt("%s: header '%s' is a %s: the sidecar's decision is taken on events whose "
                .. "headers are strings, numbers and booleans", fn, tostring(k), t), 3)
    end
    if k ~= "x-warren-attempt" then -- "attempt" says it
      headers[k] = v
    end
  end
  local f = { type = ev.type, routing_key = ev.routing_key, exchange = ev.exchange,
              content_type = ev.content_type, redelivered = ev.redelivered == true,
              body = type(ev.body) == "string" and ev.body or "", attempt = ev.attempt }
  if type(ev.id) == "string" and ev.id ~= "" then
    f.id = ev.id
  end
  if next(headers) ~= nil then
    f.headers = headers
  end
  return f
end

local function write_temp(text)
  local path = os.tmpname()
  local fh = assert(io.open(path, "wb"))
  fh:write(text)
  fh:close()
  return path
end

-- What the worker makes of EV before running a handler (exec --envelope).
local function envelope_of(fn, cfg, ev)
  local path = write_temp(cjson.encode(event_file(fn, ev)))
  local ok, j = pcall(warren_exec, fn, 3, { "-c", cfg.config, "--subscription",
                                             cfg.settings.subscription, "--event", path,
                                             "--envelope" })
  os.remove(path)
  if not ok then
    error(j, 0)
  end
  return j
end

local CTX_OPTIONS = {
  attempt = true, max_attempts = true, idempotency_key = true, trace_id = true,
  subscription = true, queue = true, worker = true, handler_version = true, now = true,
  http = true, timeout = true, breakers = true, store = true, store_prefix = true,
  store_max_writes = true, store_max_value_bytes = true, idempotency = true, config = true,
}
-- what testing.ctx{config = ...} takes from the config: not given besides it
local FROM_CONFIG = { "max_attempts", "idempotency_key", "queue", "handler_version", "timeout",
                      "store_prefix", "store_max_writes", "store_max_value_bytes",
                      "idempotency" }

--- Build a ctx with the runtime's API, recording what the handler does.
-- Besides the runtime's fields and functions, the ctx has `published` (the
-- events the last run buffered: exchange, routing_key, body, content_type,
-- type, headers, mandatory, plus message_id and, for JSON, the decoded
-- `data`), `logs` (every ctx.log call: level, msg, fields, source),
-- `http_calls` (every ctx.http.request: method, url, headers, `body` as the
-- handler gave it (a table stays a table), `body_text` (the bytes sent: a
-- table encoded as JSON), timeout, raise; an http fake function receives the
-- same table) and `clock` (the fake clock behind ctx.now(): `clock:advance(s)`,
-- `clock:set(t)`, `clock:now()`). A ctx may serve several runs; `logs` and
-- `http_calls` accumulate, `published` is reset by each run.
-- @tparam[opt] table opts
--   `attempt` (default: the event's), `max_attempts` (5),
--   `idempotency_key` (default: the event's id), `trace_id` (default: from
--   the event's traceparent header, else a made-up one), `subscription`
--   ("test"), `queue` (the subscription), `worker` (0), `handler_version`
--   (default: the loaded handler's), `now` (the fake clock's start, seconds;
--   default 2026-01-01T00:00:00Z), `timeout` (handler_timeout: seconds or a
--   duration like "200ms"; default 5 s of CPU time), `http` (fakes: a table
--   mapping "METHOD URL" to a response `{status=, headers=, body=, reason=}`,
--   a transport failure `{error = "..."}`, or a function(request) returning
--   one; or one such function for every request), `store` (ctx.store's state
--   before the first run: "key" = a string or number, {field = value} a hash,
--   {member, ...} a set: the shape of `warren exec`'s "store"), `store_prefix`
--   ("warren:store:", shown in error texts), `store_max_writes` (256),
--   `store_max_value_bytes` (65536), `idempotency` (false: ctx.store is not
--   available, as in a subscription without idempotency), `breakers` (the
--   state of each named breaker: `{psp = "open"}`; default "closed").
--   With `config` (the YAML file) and `subscription` (a name in it), the
--   ctx is that subscription's: max_attempts, timeout, queue, the store's
--   prefix and limits, whether idempotency is on and the handler version
--   come from the config as the sidecar reads it (testing.subscription), and
--   each run derives the idempotency key and checks the message as the worker
--   does before its handler runs (an invalid message, a missing key, a body
--   too large: outcome "invalid" with the worker's reason, the handler not
--   run). The subscription's contracts apply as in the worker: an event
--   its contract refuses is "invalid" (schema-invalid, version-unknown,
--   unknown-type, upcast-failed), an older version reaches the handler as
--   the contract's upcasters made it (event.version the current version,
--   event.original_version the one received), and the result's `contract`
--   lists the steps (`warren exec`'s). Those options are not given besides
--   `config`. testing.deliver needs such a ctx.
--   ctx.store behaves as in the runtime: reads see the message's own writes,
--   writes are buffered and land in the ctx's store only when the run is "ok"
--   and the sidecar's commit script lets them (see testing.run);
--   `ctx.stored` shows the committed state after each run (strings; hashes
--   as {field = value}; sets as {member = true}). TTLs follow the fake clock.
-- @treturn table the ctx
-- testing.ctx's options checked. Returns what is wrong (nil when nothing),
-- the handler timeout in ms, and the store's seeded data and expiry times.
local function ctx_options(fn, opts)
  local STR = { string = true }
  local err = unknown_option(fn, opts, CTX_OPTIONS)
    or check_count(fn, "attempt", opts.attempt, 1)
    or check_count(fn, "max_attempts", opts.max_attempts, 1)
    or check_type(fn, "idempotency_key", opts.idempotency_key, "a string", STR)
    or check_type(fn, "trace_id", opts.trace_id, "a string", STR)
    or check_type(fn, "subscription", opts.subscription, "a string", STR)
    or check_type(fn, "queue", opts.queue, "a string", STR)
    or check_count(fn, "worker", opts.worker, 0)
    or check_type(fn, "handler_version", opts.handler_version, "a string", STR)
    or check_type(fn, "now", opts.now, "a number", { number = true })
    or check_type(fn, "http", opts.http, "a table or a function",
                  { table = true, ["function"] = true })
  local timeout_ms = DEFAULT_TIMEOUT_MS
  if not err and opts.timeout ~= nil then
    local s, terr = seconds_of(fn, "timeout", opts.timeout)
    err = terr
    timeout_ms = s and floor(s * 1000 + 0.5)
  end
  if not err and type(opts.http) == "table" then
    for k, fake in pairs(opts.http) do
      if type(k) ~= "string" or not k:match("^[A-Z]+ [hH][tT][tT][pP][sS]?://") then
        err = fmt("testing.ctx: http keys are \"METHOD URL\" like \"GET http://host/path\", "
                  .. "got %s", describe(k))
        break
      end
      if type(fake) ~= "function" then
        local problem = fake_problem(fake)
        if problem then
          err = fmt("testing.ctx: the fake response for %s %s", k, problem)
          break
        end
      end
    end
  end
  local data
  if not err then
    err = check_type(fn, "store", opts.store, "a table", { table = true })
      or check_type(fn, "store_prefix", opts.store_prefix, "a string", STR)
      or check_count(fn, "store_max_writes", opts.store_max_writes, 1)
      or check_count(fn, "store_max_value_bytes", opts.store_max_value_bytes, 1)
      or check_type(fn, "idempotency", opts.idempotency, "a boolean", { boolean = true })
  end
  local exp = {}
  if not err then
    data = {}
    err = seed_into("testing.ctx", data, exp, opts.store)
  end
  return err, timeout_ms, data, exp
end

-- testing.ctx{config = FILE, subscription = NAME}: the subscription's settings
-- over OPTS (a copy). Returns the config record and the options, or nil, nil
-- and what is wrong.
local function ctx_config(fn, opts)
  if type(opts.config) ~= "string" or type(opts.subscription) ~= "string" then
    return nil, nil, fmt("%s: config must be a file name and subscription the name of one "
                         .. "of its subscriptions, got %s and %s", fn, type(opts.config),
                         type(opts.subscription))
  end
  for _, k in ipairs(FROM_CONFIG) do
    if opts[k] ~= nil then
      return nil, nil, fmt("%s: %s comes from the config (%s, subscription %s): leave it out",
                           fn, k, opts.config, opts.subscription)
    end
  end
  local ok, settings = pcall(testing.subscription, opts.config, opts.subscription)
  if not ok then
    return nil, nil, settings
  end
  local cfg = { config = opts.config, settings = settings }
  opts = deep_copy(opts)
  opts.max_attempts = settings.max_attempts
  opts.queue = settings.queue
  opts.handler_version = settings.handler_version
  opts.timeout = settings.handler_timeout_ms / 1000
  opts.store_prefix = settings.store_prefix
  opts.store_max_writes = settings.store_max_writes
  opts.store_max_value_bytes = settings.store_max_value_bytes
  opts.idempotency = settings.idempotency
  return cfg, opts
end

function testing.ctx(opts)
  if opts == nil then
    opts = {}
  elseif type(opts) ~= "table" then
    error(fmt("testing.ctx(opts): opts must be a table, got %s", type(opts)), 2)
  end
  local fn = "testing.ctx"
  local cfg, err
  if opts.config ~= nil then
    cfg, opts, err = ctx_config(fn, opts)
    if err then
      error(err, 2)
    end
  end
  local timeout_ms, data, exp
  err, timeout_ms, data, exp = ctx_options(fn, opts)
  if err then
    error(err, 2)
  end

  trace_count = trace_count + 1
  local st = {
    config = cfg,
    phase = "none",
    attempt = opts.attempt,
    key = opts.idempotency_key,
    trace = opts.trace_id,
    made_up_trace = fmt("7e57%028x", trace_count),
    version = opts.handler_version,
    timeout_ms = timeout_ms,
    http = opts.http,
    breakers = opts.breakers,
    store = {
      enabled = opts.idempotency ~= false,
      prefix = opts.store_prefix or "warren:store:",
      max_writes = opts.store_max_writes or 256,
      max_value_bytes = opts.store_max_value_bytes or 65536,
      data = data, exp = exp, buf = new_buffer(),
    },
  }
  local ctx = {}
  ctx.publish = make_publish(ctx, st)
  ctx.reject = make_reject(st)
  ctx.retry = make_retry(st)
  local clock = setmetatable({ t = opts.now or DEFAULT_NOW }, Clock)
  st.clock = clock
  ctx.now = function()
    return floor(clock.t * 1000) / 1000
  end
  ctx.log = {}
  for _, level in ipairs(LEVELS) do
    ctx.log[level] = make_log(ctx, level)
  end
  ctx.http = { request = make_http_request(ctx, st) }
  ctx.breaker = make_breaker(st)
  ctx.store = make_store(st)
  ctx.json = cjson_safe
  ctx.subscription = opts.subscription or "test"
  ctx.queue = opts.queue or ctx.subscription
  ctx.worker = opts.worker or 0
  ctx.max_attempts = opts.max_attempts or DEFAULT_MAX_ATTEMPTS
  ctx.handler_version = opts.handler_version or DEFAULT_VERSION
  ctx.attempt = opts.attempt or 1
  ctx.idempotency_key = opts.idempotency_key
  ctx.trace_id = opts.trace_id or st.made_up_trace
  ctx.message_id = nil
  ctx.published, ctx.logs, ctx.http_calls = {}, {}, {}
  ctx.clock = clock
  ctx.stored = stored_view(st)
  states[ctx] = st
  return ctx
end

--- Load a handler file the way the sidecar does.
-- The file runs in a fresh sandbox (the runtime's own sandbox source: the same
-- whitelisted globals, locked globals, `require` of Lua modules from the
-- handler's directory plus cjson), under the default deadline, and must return
-- a table with `handle` (and `init`, if any, a function). Each call is a fresh
-- "Lua state": module-level locals start over. `init` is not run: see
-- testing.init.
-- @tparam string path the handler file (relative to the current directory, or absolute)
-- @tparam[opt] table opts `timeout`: the deadline of the module body, seconds
--   or a duration like "200ms" (default 5 s of CPU time, as handler_timeout's)
-- @treturn[1] table the module
-- @treturn[2] nil
-- @treturn[2] string what went wrong, in the sidecar's words
function testing.load(path, opts)
  if type(path) ~= "string" then
    error(fmt("testing.load(path [, opts]): path must be a string, got %s", type(path)), 2)
  end
  local timeout_ms = DEFAULT_TIMEOUT_MS
  if opts ~= nil then
    if type(opts) ~= "table" then
      error(fmt("testing.load(path [, opts]): opts must be a table, got %s", type(opts)), 2)
    end
    local err = unknown_option("testing.load", opts, { timeout = true })
    if not err and opts.timeout ~= nil then
      local s
      s, err = seconds_of("testing.load", "timeout", opts.timeout)
      timeout_ms = s and floor(s * 1000 + 0.5)
    end
    if err then
      error(err, 2)
    end
  end
  local fh, oerr = io.open(path, "rb")
  if not fh then
    local why = tostring(oerr)
    if why:sub(1, #path + 2) == path .. ": " then
      why = why:sub(#path + 3)
    end
    return nil, fmt(E.load_open, path, "handler", why)
  end
  local src = fh:read("*a")
  fh:close()
  if #src > MAX_SOURCE then
    return nil, fmt(E.load_too_large, path, "handler", MAX_SOURCE)
  end
  local version = handler_version(src)
  if src:sub(1, 1) == "\27" then
    return nil, fmt(E.load_bytecode, path)
  end
  local dir = path:match("^(.*)/[^/]*$") or "."
  local make_env = assert(loadstring(SANDBOX_LUA, "=warren.sandbox"))
  local dump = string_table.dump
  local env = make_env(_G, dir, cjson, cjson_safe, read_source, MAX_SOURCE)
  string_table.dump = dump -- the sandbox removes it for good; the kit only while handlers run
  local chunk, cerr = loadstring(src, "@" .. path)
  if not chunk then
    return nil, cerr
  end
  setfenv(chunk, env)
  local ok, m = guarded_call(timeout_ms, chunk)
  if not ok then
    return nil, error_text(m)
  end
  if type(m) ~= "table" then
    return nil, fmt(E.load_not_table, path, type(m))
  end
  if type(m.handle) ~= "function" then
    return nil, fmt(E.load_no_handle, path, type(m.handle))
  end
  if m.init ~= nil and type(m.init) ~= "function" then
    return nil, fmt(E.load_init_type, path, type(m.init))
  end
  modules[m] = { path = path, version = version }
  return m
end

--- The version the sidecar gives a handler file: 12 hex digits of the FNV-1a
-- hash of its content (what ctx.handler_version holds).
-- @tparam string source the file's content
-- @treturn string
function testing.version(source)
  if type(source) ~= "string" then
    error(fmt("testing.version(source): source must be a string, got %s", type(source)), 2)
  end
  return handler_version(source)
end

local function ctx_state(fn, ctx)
  local st = states[ctx]
  if not st then
    error(fmt("%s: ctx must come from testing.ctx{...}, got %s", fn, type(ctx)), 3)
  end
  return st
end

--- Run a handler's init(ctx) the way the sidecar does when it loads it.
-- In init, ctx.publish, ctx.reject, ctx.retry and ctx.http.request raise
-- "ctx.<fn> is not available in init (only while handling a message)", and the
-- per-message fields (attempt, idempotency_key, trace_id, message_id) are nil.
-- @tparam table module a handler module (from testing.load, or any table)
-- @tparam[opt] table ctx from testing.ctx (default: a new one)
-- @treturn[1] boolean true (also when the module has no init)
-- @treturn[2] nil
-- @treturn[2] string "init failed: <error>", as the sidecar reports it
function testing.init(module, ctx)
  if type(module) ~= "table" then
    error(fmt("testing.init(module, ctx): module must be a table, got %s", type(module)), 2)
  end
  ctx = ctx or testing.ctx()
  local st = ctx_state("testing.init", ctx)
  local init = module.init
  if init == nil then
    return true
  end
  local info = modules[module]
  if type(init) ~= "function" then
    return nil, fmt(E.load_init_type, info and info.path or "handler", type(init))
  end
  if not st.version then
    ctx.handler_version = info and info.version or DEFAULT_VERSION
  end
  local saved = { ctx.attempt, ctx.idempotency_key, ctx.trace_id, ctx.message_id }
  ctx.attempt, ctx.idempotency_key, ctx.trace_id, ctx.message_id = nil, nil, nil, nil
  st.phase = "init"
  local ok, err = guarded_call(st.timeout_ms, init, ctx)
  st.phase = "none"
  ctx.attempt, ctx.idempotency_key, ctx.trace_id, ctx.message_id = saved[1], saved[2],
    saved[3], saved[4]
  if not ok then
    return nil, fmt(E.init_failed, error_text(err))
  end
  return true
end

local run_message

--- Run one message through `module.handle(event, ctx)`, as wr_lua_handle does.
-- The handler gets a fresh copy of the event (the runtime builds one per
-- call); `event.attempt` and `ctx.attempt` agree. ctx.reject and ctx.retry win
-- even when the handler caught their unwinding with pcall; any other error
-- becomes outcome "error" with its first line. Only an "ok" run keeps what
-- ctx.publish buffered.
-- The ctx.store writes of an ok run are committed as the sidecar commits
-- them: by its commit script (sidecar/scripts/finish.lua) over the ctx's
-- store. A write Redis would refuse (a hincrby on a key that holds a string)
-- refuses them all: the sidecar dead-letters such a message (store-refused).
-- A value the handler read that another message changed before the commit
-- (opts.store_at_commit) is a conflict: nothing applied, the sidecar runs the
-- message again. Either way its events were published (the sidecar publishes
-- before the commit).
-- @tparam table module a handler module (from testing.load, or any table with handle)
-- @tparam table event from testing.event (or a table shaped like one)
-- @tparam[opt] table ctx from testing.ctx (default: a new one)
-- @tparam[opt] table opts `store_at_commit`: what other messages commit to
--   ctx.store while this one runs, after its reads and before its commit (the
--   shape of testing.ctx's `store`; false deletes a key)
-- @treturn table `outcome` ("ok", "rejected", "retry", "error", "timeout",
--   "invalid"), `reason` (the stable code warren puts in x-warren-reason:
--   "rejected", "retry-requested", "handler-error", "timeout", "invalid-json",
--   "empty-body", "store-refused"; nil when ok), `error` (the reject/retry
--   reason or the error text; nil when ok), `delay` (ms asked by ctx.retry,
--   or nil for the policy's), `commit` (when an ok run wrote to ctx.store:
--   "applied", "refused" or "conflict"; then `reason` and `error` say why it
--   did not apply), `published` (= ctx.published), `logs` and `http_calls`
--   (this run's), `event` (the copy the handler got) and `ctx`.
function testing.run(module, event, ctx, opts)
  if type(module) ~= "table" or type(module.handle) ~= "function" then
    error(fmt("testing.run(module, event, ctx): module must be a table with a function "
              .. "'handle', got %s", type(module)), 2)
  end
  if type(event) ~= "table" then
    error(fmt("testing.run(module, event, ctx): event must be a table, got %s", type(event)), 2)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error(fmt("testing.run(module, event, ctx, opts): opts must be a table, got %s", type(opts)),
          2)
  end
  opts = opts or {}
  local oerr = unknown_option("testing.run", opts, { store_at_commit = true })
    or check_type("testing.run", "store_at_commit", opts.store_at_commit, "a table",
                  { table = true })
  if oerr then
    error(oerr, 2)
  end
  ctx = ctx or testing.ctx()
  local st = ctx_state("testing.run", ctx)
  return run_message(module, event, ctx, st, opts)
end

-- testing.run's body (testing.deliver runs it too).
run_message = function(module, event, ctx, st, opts)
  local first_log, first_call = #ctx.logs + 1, #ctx.http_calls + 1
  ctx.published = {}
  local result = { ctx = ctx, published = ctx.published }

  -- a ctx of a config's subscription: what the worker does before the handler
  local env
  if st.config then
    env = envelope_of("testing.run", st.config, event)
    if env.outcome == "invalid" then
      result.outcome, result.reason, result.error = "invalid", env.reason, env.error
      result.decision = env.decision
      result.logs, result.http_calls = {}, {}
      return result
    end
  end
  local bad = invalid[event]
  if bad then
    result.outcome, result.reason, result.error = "invalid", bad.reason, bad.error
    result.logs, result.http_calls = {}, {}
    return result
  end

  local ev = deep_copy(event)
  -- its contract (exec's "contract": the worker's steps): event.version is the
  -- version found; an older one reaches the handler as the upcasters made it
  local contract = env and env.contract
  if contract then
    result.contract = contract
    if type(contract.version) == "number" then
      ev.version = fmt("%d", contract.version)
    end
    if type(contract.body_for_handler) == "string" then
      ev.original_version = ev.version
      ev.version = fmt("%d", contract.version_for_handler)
      ev.body = contract.body_for_handler
      ev.data = cjson.decode(contract.body_for_handler)
    end
  end
  local attempt = st.attempt or (env and env.attempt)
    or (type(ev.attempt) == "number" and ev.attempt) or 1
  ev.attempt = attempt
  ctx.attempt = attempt
  ctx.message_id = type(ev.id) == "string" and ev.id or ""
  ctx.idempotency_key = st.key or (env and env.idempotency_key) or ctx.message_id
  ctx.trace_id = st.trace
    or traceparent_id(type(ev.headers) == "table" and ev.headers.traceparent or nil)
    or st.made_up_trace
  local info = modules[module]
  ctx.handler_version = st.version or (info and info.version) or DEFAULT_VERSION
  result.event = ev

  st.forced, st.forced_reason, st.forced_delay = nil, nil, nil
  store_begin(st)
  st.phase = "handle"
  local ok, err, timed_out = guarded_call(st.timeout_ms, module.handle, ev, ctx)
  st.phase = "none"
  -- ctx.store: the writes land only when the handler succeeded (with the done
  -- mark), and only when the commit script lets them
  local commit, why = store_end(ctx, st, ok and not st.forced, opts.store_at_commit)

  if st.forced then
    result.outcome = st.forced
    result.reason = st.forced == "rejected" and "rejected" or "retry-requested"
    result.error = st.forced_reason
    result.delay = st.forced_delay
  elseif ok then
    result.outcome = "ok"
  else
    result.outcome = timed_out and "timeout" or "error"
    result.reason = timed_out and "timeout" or "handler-error"
    result.error = error_text(err)
  end
  if result.outcome ~= "ok" then
    ctx.published = {} -- a failed handler publishes nothing
    result.published = ctx.published
  end
  result.commit, result.commit_error = commit, why
  if commit == "refused" then
    result.reason, result.error = "store-refused", fmt(S.refused, why)
  elseif commit == "conflict" then
    result.error = fmt(S.conflict, why)
  elseif commit == "failed" then
    result.error = fmt(S.failed, why)
  end
  result.logs = { unpack(ctx.logs, first_log) }
  result.http_calls = { unpack(ctx.http_calls, first_call) }
  return result
end

--- An event file of `warren exec` (evfile.h: a recorded event, its store
-- and its HTTP fakes) as a spec's event, so a spec and `warren exec` run the
-- same files. The file is read and checked by the binary (as exec checks
-- it); CTX (from testing.ctx{config = ..., subscription = ...}) takes the
-- file's "store" as its committed state and answers ctx.http from the
-- file's "http" fakes, matched as exec matches them (the first unused entry
-- with the method and URL, in file order; "reuse" answers again), with the
-- same defaults (status 200, the standard reason phrase, libcurl's words for
-- a transport error).
-- @tparam string path the event file
-- @tparam table ctx from testing.ctx{config = ..., subscription = ...}
-- @treturn table the event (testing.event's shape)
-- @treturn table opts for testing.run and testing.deliver: `store_at_commit`
function testing.event_file(path, ctx)
  local fn = "testing.event_file"
  if type(path) ~= "string" then
    error(fmt("%s(path, ctx): path must be a string, got %s", fn, type(path)), 2)
  end
  local st = states[ctx]
  if not st or not st.config then
    error(fmt("%s: ctx must come from testing.ctx{config = ..., subscription = ...}", fn), 2)
  end
  local j = warren_exec(fn, 2, { "-c", st.config.config, "--subscription",
                                 st.config.settings.subscription, "--event", path,
                                 "--envelope" })
  local f = j.event_file
  local function value(v)
    if v == cjson.null then
      return false
    end
    return v
  end
  local ev = testing.event{
    id = f.id or "", type = f.type, routing_key = f.routing_key, exchange = f.exchange,
    content_type = f.content_type, headers = f.headers, attempt = f.attempt,
    redelivered = f.redelivered, data = f.data, body = f.body,
  }
  -- the file's store is the state before the event
  local data, exp = {}, {}
  local err = seed_into(fn, data, exp, f.store)
  if err then
    error(err, 2)
  end
  st.store.data, st.store.exp = data, exp
  ctx.stored = stored_view(st)
  -- its fakes answer ctx.http, as exec's do
  local fakes, used = j.http_fakes or {}, {}
  st.http = function(req)
    for i, fake in ipairs(fakes) do
      if fake.method == req.method and fake.url == req.url and (fake.reuse or not used[i]) then
        used[i] = true
        if fake.error then
          return { error = fake.error }
        end
        return { status = fake.status, reason = fake.reason, headers = fake.headers,
                 body = fake.body }
      end
    end
    return nil
  end
  local opts = {}
  if type(f.store_at_commit) == "table" then
    opts.store_at_commit = {}
    for k, v in pairs(f.store_at_commit) do
      opts.store_at_commit[k] = value(v)
    end
  end
  return ev, opts
end

--- Deliver one message as the sidecar would: the checks the worker makes
-- before any handler runs, the handler (as testing.run runs it, with the
-- ctx's fakes), its commit, and the decision the worker takes, which is
-- `warren exec`'s own (the same decision `warren exec` prints for the event).
-- @tparam table module a handler module (from testing.load)
-- @tparam table event from testing.event
-- @tparam table ctx from testing.ctx{config = ..., subscription = ...}
-- @tparam[opt] table opts as testing.run's
-- @treturn table testing.run's result, plus `decision`: `action` ("ack",
--   "retry", "dead-letter" or "requeue"), `queue` (the delay queue, the DLQ or
--   the queue), `delay_ms` and `next_attempt` (retry), `reason` (the
--   x-warren-reason of a retry or DLQ copy), `error` or `why`; and `report`,
--   all that `warren exec --json` would print but the HTTP calls (the
--   published events with their ids, `commit`, ...)
function testing.deliver(module, event, ctx, opts)
  local fn = "testing.deliver"
  if type(module) ~= "table" or type(module.handle) ~= "function" then
    error(fmt("%s(module, event, ctx): module must be a table with a function 'handle', got %s",
              fn, type(module)), 2)
  end
  if type(event) ~= "table" then
    error(fmt("%s(module, event, ctx): event must be a table, got %s", fn, type(event)), 2)
  end
  local st = states[ctx]
  if not st or not st.config then
    error(fmt("%s: ctx must come from testing.ctx{config = ..., subscription = ...}: the "
              .. "decision is the config's", fn), 2)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error(fmt("%s(module, event, ctx, opts): opts must be a table, got %s", fn, type(opts)), 2)
  end
  opts = opts or {}
  local oerr = unknown_option(fn, opts, { store_at_commit = true })
  if oerr then
    error(oerr, 2)
  end
  local res = run_message(module, event, ctx, st, opts)
  if res.decision then
    return res -- invalid before the handler: the worker's decision came with it
  end
  local pubs = {}
  for i, p in ipairs(res.published) do
    pubs[i] = { exchange = p.exchange, routing_key = p.routing_key, body = p.body,
                content_type = p.content_type, type = p.type, headers = p.headers }
  end
  local ran = { outcome = res.outcome, reason = res.reason, error = res.error,
                retry_delay_ms = res.delay, published = pubs }
  if res.commit then
    ran.commit = { result = res.commit, error = res.commit_error }
  end
  if res.outcome ~= "ok" then
    ran.reason, ran.error = res.reason, res.error
  end
  local evpath = write_temp(cjson.encode(event_file(fn, event)))
  local respath = write_temp(cjson.encode(ran))
  local ok, report = pcall(warren_exec, fn, 2, { "-c", st.config.config, "--subscription",
                                                  st.config.settings.subscription, "--event",
                                                  evpath, "--result", respath, "--json" })
  os.remove(evpath)
  os.remove(respath)
  if not ok then
    error(report, 0)
  end
  report.http_calls, report.unused_fakes = nil, nil
  res.decision, res.report = report.decision, report
  return res
end

return testing
