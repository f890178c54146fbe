-- The contract between the test kit and the runtime, checked by running the
-- same probe handler in both: in the real runtime through `warren exec` (the
-- embedded LuaJIT state, the C implementation of ctx), and in the kit through
-- testing.run. The probe describes ctx (every key, the type of every value,
-- the functions inside log/json/http) and calls each ctx function with wrong
-- arguments, recording the errors raised (whole, with the probe's file:line).
-- Its HTTP calls are answered by fakes on both sides (the event file's "http"
-- list under `warren exec`, testing.ctx{http} in the kit), so transport and
-- 5xx errors, masked URLs and responses are compared too, with no network.
-- The two descriptions must be identical: a function added to one side only,
-- an argument check that differs or an error text that drifts fails here.
--
-- Needs the built binary: WARREN_BIN (tests/lua/run_busted.sh sets it to
-- build-test/warren or build/warren). Without it this spec fails; it never
-- skips.

local cjson = require "cjson"
local testing = require "warren.testing"

local PROBE = [==[
local M = {}

local function describe_table(t)
  local keys = {}
  for k, v in pairs(t) do
    keys[#keys + 1] = k .. ":" .. type(v)
  end
  table.sort(keys)
  return keys
end

local function try(f, ...)
  local ok, err = pcall(f, ...)
  if ok then return "no error" end
  return type(err) == "string" and err or ("non-string error: " .. type(err))
end

function M.handle(event, ctx)
  local d = {}
  d.ctx = describe_table(ctx)
  d.log = describe_table(ctx.log)
  d.json = describe_table(ctx.json)
  d.http = describe_table(ctx.http)
  d.now = type(ctx.now())
  d.attempt = ctx.attempt
  d.max_attempts = ctx.max_attempts
  d.idempotency_key = ctx.idempotency_key
  local ok_decode, err_decode = ctx.json.decode("{")
  d.decode_bad = { tostring(ok_decode), type(err_decode) }
  d.encode = ctx.json.encode({ a = 1 })
  local e = {}
  e[#e + 1] = try(ctx.publish)
  e[#e + 1] = try(ctx.publish, 1, "k", "b")
  e[#e + 1] = try(ctx.publish, "", 2, "b")
  e[#e + 1] = try(ctx.publish, "", "k", 3)
  e[#e + 1] = try(ctx.publish, "", "k", "b", 5)
  e[#e + 1] = try(ctx.publish, "", "k", "b", { headers = 5 })
  e[#e + 1] = try(ctx.publish, "", "k", "b", { headers = { "x" } })
  e[#e + 1] = try(ctx.publish, "", "k", "b", { content_type = 1 })
  e[#e + 1] = try(ctx.publish, "", "k", "b", { type = 1 })
  e[#e + 1] = try(ctx.publish, string.rep("x", 256), "k", "b")
  e[#e + 1] = try(ctx.publish, "", string.rep("k", 300), "b")
  e[#e + 1] = try(ctx.publish, "", "k", "b", { type = string.rep("t", 256) })
  e[#e + 1] = try(ctx.publish, "", "k", "b", { headers = { [string.rep("h", 256)] = 1 } })
  e[#e + 1] = try(ctx.reject)
  e[#e + 1] = try(ctx.reject, 1)
  e[#e + 1] = try(ctx.retry)
  e[#e + 1] = try(ctx.retry, "r", 5)
  e[#e + 1] = try(ctx.retry, "r", { delay = "soon" })
  e[#e + 1] = try(ctx.retry, "r", { delay = true })
  e[#e + 1] = try(ctx.retry, "r", { delay = -1 })
  e[#e + 1] = try(ctx.log.info)
  e[#e + 1] = try(ctx.log.warn, {})
  e[#e + 1] = try(ctx.log.error, "m", 5)
  local http = ctx.http.request
  e[#e + 1] = try(http)
  e[#e + 1] = try(http, 5)
  e[#e + 1] = try(http, { url = 5 })
  e[#e + 1] = try(http, { url = "ftp://x" })
  e[#e + 1] = try(http, { url = "http://a b" })
  e[#e + 1] = try(http, { url = "http://x", method = 5 })
  e[#e + 1] = try(http, { url = "http://x", method = "get" })
  e[#e + 1] = try(http, { url = "http://x", raise = 1 })
  e[#e + 1] = try(http, { url = "http://x", timeout = -1 })
  e[#e + 1] = try(http, { url = "http://x", timeout = "soon" })
  e[#e + 1] = try(http, { url = "http://x", timeout = {} })
  e[#e + 1] = try(http, { url = "http://x", body = 5 })
  e[#e + 1] = try(http, { url = "http://x", headers = 5 })
  e[#e + 1] = try(http, { url = "http://x", headers = { "v" } })
  e[#e + 1] = try(http, { url = "http://x", headers = { a = {} } })
  e[#e + 1] = try(http, { url = "http://x", headers = { ["a:b"] = "v" } })
  e[#e + 1] = try(http, { url = "http://x", bogus = 1 })
  e[#e + 1] = try(http, { url = "ftp://admin:s3cr3t@x/?api_key=k" })
  e[#e + 1] = try(http, { url = "http://x", headers = { ["X-Big"] = string.rep("v", 4090) } })
  -- answered by fakes: the event file's "http" / testing.ctx{http}
  e[#e + 1] = try(http, { url = "http://admin:s3cr3t@svc/down?api_key=k" })
  e[#e + 1] = try(http, { url = "http://svc/busy" })
  local res = http{ method = "POST", url = "http://svc/ok", body = { a = 1 } }
  d.http_ok = { res.status, res.json.id, res.headers["content-type"], res.body }
  local none, err = http{ url = "http://svc/slow", raise = false }
  d.http_quiet = { none == nil, err }
  e[#e + 1] = try(ctx.breaker)
  e[#e + 1] = try(ctx.breaker, 5)
  e[#e + 1] = try(ctx.breaker, "")
  local brk = ctx.breaker("probe-dep")
  e[#e + 1] = try(brk.call, 5)
  e[#e + 1] = try(brk.call, brk, 5)
  e[#e + 1] = try(brk.state, 5)
  d.breaker_state = brk:state()
  d.breaker_same = ctx.breaker("probe-dep") == brk
  d.breaker_result = { brk:call(function(a, b) return a + b, "two" end, 1, 2) }
  e[#e + 1] = try(brk.call, brk, function() error("boom", 0) end)
  -- ctx.store over the seeded state (the event file's "store" / testing.ctx{store})
  local st = ctx.store
  d.store = describe_table(st)
  st.incrby("n", 2)
  d.n = st.get("n")
  st.hset("h", "a", 1)
  d.h = st.hgetall("h")
  st.sadd("s", "m")
  d.sm = { st.sismember("s", "m"), st.sismember("s", "x") }
  st.del("gone")
  d.gone = { st.get("gone") == nil, st.exists("gone"), st.ttl("gone") }
  st.set("t", "x", 60)
  d.t = { st.get("t"), st.ttl("t"), st.ttl("n"), st.exists("n") }
  local members = st.smembers("seedset")
  table.sort(members)
  d.members = members
  d.hget = { st.hget("h", "b"), st.hget("h", "zz") == nil }
  e[#e + 1] = try(st.get)
  e[#e + 1] = try(st.get, 5)
  e[#e + 1] = try(st.get, "")
  e[#e + 1] = try(st.get, "h")
  e[#e + 1] = try(st.set, "k", {})
  e[#e + 1] = try(st.set, "k", true)
  e[#e + 1] = try(st.set, "k", "v", -1)
  e[#e + 1] = try(st.set, "k", "v", "x")
  e[#e + 1] = try(st.incrby, "k", 1.5)
  e[#e + 1] = try(st.incrby, "k", "x")
  e[#e + 1] = try(st.hincrby, "h", "f", {})
  e[#e + 1] = try(st.sadd, "s")
  e[#e + 1] = try(st.hset, "k", "f")
  e[#e + 1] = try(st.incrby, "h", 1)
  e[#e + 1] = try(st.expire, "k", 0)
  e[#e + 1] = try(st.hget, "h", {})
  e[#e + 1] = try(st.exists, "a", "b")
  e[#e + 1] = try(st.hget, "str", "f") -- Redis refuses the read: WRONGTYPE
  d.errors = e
  -- Every area's errors again, raised deep inside a breaker's function by a
  -- tail call and caught outside: each must still name the handler's line
  -- that called the breaker (a DLQ copy keeps where the call came from).
  local deep = {}
  local never = ctx.breaker("probe-deep") -- enabled: false in the runtime: never opens
  local function via_breaker(f, ...)
    local args, n = { ... }, select("#", ...)
    local ok, err = pcall(function()
      local r = never:call(function() return f(unpack(args, 1, n)) end)
      return r
    end)
    return ok and "no error" or err
  end
  deep[#deep + 1] = via_breaker(http, { url = "http://admin:s3cr3t@svc/down?api_key=k" })
  deep[#deep + 1] = via_breaker(http, { url = "http://svc/busy" })
  deep[#deep + 1] = via_breaker(http, { url = 5 })
  deep[#deep + 1] = via_breaker(st.get, 5)
  deep[#deep + 1] = via_breaker(st.hget, "str", "f")
  deep[#deep + 1] = via_breaker(st.hset, "n", "f", "v")
  deep[#deep + 1] = via_breaker(ctx.publish, 1, "k", "b")
  deep[#deep + 1] = via_breaker(ctx.retry, "r", { delay = true })
  deep[#deep + 1] = via_breaker(ctx.reject, 1)
  deep[#deep + 1] = via_breaker(ctx.breaker, 5)
  deep[#deep + 1] = via_breaker(ctx.log.info, {})
  -- a breaker that opens: one failure opens it (consecutive_failures: 1 in the
  -- runtime's config; the kit is told it is open)
  local dep = ctx.breaker("dep-open")
  pcall(dep.call, dep, function() error("down", 0) end)
  deep[#deep + 1] = via_breaker(dep.call, dep, function() end)
  d.deep = deep
  ctx.publish("", "probe", d)
end

return M
]==]

-- ctx.store's state before the probe runs, in both
local SEED = { n = 5, h = { b = "x" }, gone = "v", seedset = { "a", "b" }, str = "v" }

-- the answers to the probe's HTTP calls, in both: exec's fakes (which speak
-- of transport errors by kind and give a 5xx its standard reason phrase)
-- and the kit's (which take the texts as they are)
local EXEC_FAKES = {
  { method = "GET", url = "http://admin:s3cr3t@svc/down?api_key=k", error = "connect",
    reuse = true },
  { method = "GET", url = "http://svc/busy", status = 503, reuse = true },
  { method = "POST", url = "http://svc/ok", status = 201, json = { id = "r-1" } },
  { method = "GET", url = "http://svc/slow", error = "timeout" },
}
local KIT_FAKES = {
  ["GET http://admin:s3cr3t@svc/down?api_key=k"] = { error = "Couldn't connect to server" },
  ["GET http://svc/busy"] = { status = 503, reason = "Service Unavailable" },
  ["POST http://svc/ok"] = { status = 201, body = { id = "r-1" } },
  ["GET http://svc/slow"] = { error = "Timeout was reached" },
}

local function tmpdir()
  local name = os.tmpname()
  os.remove(name)
  assert(os.execute("mkdir -p " .. name) == 0 or true)
  return name
end

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

local function run_runtime(dir)
  local bin = os.getenv("WARREN_BIN")
  assert(bin and bin ~= "", "WARREN_BIN is not set: build warren and run the specs with "
    .. "tests/lua/run_busted.sh, which points it at build-test/warren or build/warren")
  write(dir .. "/warren.yaml", table.concat({
    "amqp:", "  url: amqp://guest:guest@127.0.0.1:5672/",
    "redis:", "  url: redis://127.0.0.1:6379/0",
    "breakers:", "  dep-open: {consecutive_failures: 1}", "  probe-deep: {enabled: false}",
    "subscriptions:", "  - name: probe", "    queue: probe.q", "    handler: probe.lua",
    "    retry: {max_attempts: 3}", "" }, "\n"))
  write(dir .. "/event.json", cjson.encode({ id = "p-1", type = "probe", data = { n = 1 },
                                            store = SEED, http = EXEC_FAKES }))
  local cmd = string.format("%q exec -c %q --subscription probe --event %q --json 2>/dev/null",
    bin, dir .. "/warren.yaml", dir .. "/event.json")
  local p = assert(io.popen(cmd))
  local out = p:read("*a")
  p:close()
  local report = cjson.decode(out)
  assert.equals("ok", report.outcome)
  return cjson.decode(report.published[1].body)
end

local function run_kit(dir)
  local module = assert(testing.load(dir .. "/probe.lua"))
  local res = testing.run(module, testing.event{ id = "p-1", type = "probe", data = { n = 1 } },
    testing.ctx{ max_attempts = 3, idempotency_key = "p-1", store = SEED, http = KIT_FAKES,
                 breakers = { ["dep-open"] = "open" } })
  assert.equals("ok", res.outcome, res.error)
  return cjson.decode(res.published[1].body)
end

-- A handler whose commit depends on the store: the runtime's (warren exec,
-- the sidecar's commit script over the event file's store) and the kit's must
-- decide alike, in the same words.
local COMMITTER = [==[
return { handle = function(event, ctx)
  local d = event.data
  if d.read then ctx.store.get(d.read) end
  for _, w in ipairs(d.writes) do ctx.store[w[1]](unpack(w, 2)) end
end }
]==]

local COMMIT_CASES = {
  { name = "a hincrby on a string", store = { c = "500" },
    data = { writes = { { "hincrby", "c", "cents", 100 } } } },
  { name = "an incrby over 05", store = { n = "05" },
    data = { writes = { { "incrby", "n", 1 } } } },
  { name = "an sadd on a hash", store = { h = { f = "1" } },
    data = { writes = { { "set", "x", "1" }, { "sadd", "h", "m" } } } },
  { name = "a read changed before the commit", store = { s = "5" }, at_commit = { s = "3" },
    data = { read = "s", writes = { { "incrby", "s", -1 } } } },
  { name = "a blind write over a changed key", store = { s = "5" }, at_commit = { s = "3" },
    data = { writes = { { "incrby", "s", -1 } } } },
  { name = "writes that apply", store = { h = { f = "1" } },
    data = { read = "h2", writes = { { "hincrby", "h", "f", 2 }, { "del", "h2" } } } },
}

describe("the contract between the kit and the runtime", function()
  it("commits ctx.store writes alike: applied, refused (store-refused) or a conflict",
     function()
    local bin = os.getenv("WARREN_BIN")
    assert(bin and bin ~= "", "WARREN_BIN is not set")
    local dir = tmpdir()
    write(dir .. "/committer.lua", COMMITTER)
    write(dir .. "/warren.yaml", table.concat({
      "amqp:", "  url: amqp://guest:guest@127.0.0.1:5672/",
      "redis:", "  url: redis://127.0.0.1:6379/0",
      "subscriptions:", "  - name: c", "    queue: c.q", "    handler: committer.lua", "" },
      "\n"))
    local module = assert(testing.load(dir .. "/committer.lua"))
    for i, c in ipairs(COMMIT_CASES) do
      local ev = { id = "c-" .. i, data = c.data, store = c.store, store_at_commit = c.at_commit }
      write(dir .. "/event.json", cjson.encode(ev))
      local p = assert(io.popen(string.format(
        "%q exec -c %q --subscription c --event %q --json 2>/dev/null", bin,
        dir .. "/warren.yaml", dir .. "/event.json")))
      local report = cjson.decode(p:read("*a"))
      p:close()
      local runtime = { report.outcome, report.commit.result,
                        report.decision.error or report.decision.why }
      local res = testing.run(module, testing.event{ id = "c-" .. i, data = c.data },
                              testing.ctx{ store = c.store },
                              { store_at_commit = c.at_commit })
      assert.same(runtime, { res.outcome, res.commit, res.error }, c.name)
    end
    os.execute("rm -rf " .. dir)
  end)

  it("gives handlers the same ctx: names, types, argument checks and error texts", function()
    local dir = tmpdir()
    write(dir .. "/probe.lua", PROBE)
    local runtime = run_runtime(dir)
    local kit = run_kit(dir)
    os.execute("rm -rf " .. dir)
    assert.is_true(#runtime.errors >= 30)
    -- every deep error names the probe's line that called the breaker
    local before = PROBE:sub(1, PROBE:find("local r = never:call", 1, true))
    local line = before:gsub("[^\n]", ""):len() + 1
    for i, err in ipairs(runtime.deep) do
      assert.matches("^" .. (dir .. "/probe.lua"):gsub("%p", "%%%0") .. ":" .. line .. ": ", err,
                     nil, false, "deep[" .. i .. "]")
    end
    assert.equals(12, #runtime.deep)
    -- the kit adds its recorders to ctx, and nothing else
    local extras, kept = {}, {}
    for _, entry in ipairs(kit.ctx) do
      local name = entry:match("^([^:]+):")
      if name == "clock" or name == "published" or name == "logs" or name == "http_calls"
        or name == "stored" then
        extras[#extras + 1] = entry
      else
        kept[#kept + 1] = entry
      end
    end
    assert.same({ "clock:table", "http_calls:table", "logs:table", "published:table",
                  "stored:table" }, extras)
    kit.ctx = kept
    assert.same(runtime, kit)
  end)
end)
