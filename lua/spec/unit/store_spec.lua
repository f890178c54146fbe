-- Specs of the kit's ctx.store: the runtime's semantics in memory. Reads see
-- the message's own writes; writes land only when the handler succeeds; a
-- failed, retried or rejected run applies nothing; argument errors match the
-- runtime's texts (the contract spec compares them with the real runtime).

local testing = require "warren.testing"
local S, E = testing.STORE_ERRORS, testing.ERRORS

local function handler(fn)
  return { handle = fn }
end

local function run(fn, ctx, event)
  return testing.run(handler(fn), event or testing.event{ id = "e-1", data = {} }, ctx)
end

describe("ctx.store in the kit", function()
  it("counts with Redis's integer grammar: 05, -0, +5 are not integers", function()
    for _, v in ipairs{ "05", "-0", "+5", " 5", "1.5", "123456789012345678901" } do
      -- a blind incrby is buffered; the commit refuses it, as the sidecar's does
      local ctx = testing.ctx{ store = { n = v } }
      local res = run(function(_, c) c.store.incrby("n", 1) end, ctx)
      assert.equals("ok", res.outcome, v)
      assert.equals("refused", res.commit, v)
      assert.equals("store-refused", res.reason)
      assert.equals("store writes refused, nothing applied: ctx.store.incrby: the value of "
                    .. "warren:store:n is not an integer or would overflow", res.error)
      assert.same({ n = v }, ctx.stored)
      -- reading it back after the increment raises, as storebuf does
      res = run(function(_, c) c.store.incrby("n", 1); c.store.get("n") end, ctx)
      assert.equals("error", res.outcome, v)
      assert.matches("ctx.store.get: value is not an integer", res.error, 1, true)
    end
    for _, v in ipairs{ "0", "-5", "42" } do
      local ctx = testing.ctx{ store = { n = v } }
      local res = run(function(_, c) c.store.incrby("n", 1) end, ctx)
      assert.equals("ok", res.outcome, v)
      assert.equals(tostring(tonumber(v) + 1), ctx.stored.n)
    end
  end)

  it("reads see the message's own writes", function()
    local ctx = testing.ctx{ store = { n = 5, h = { b = "x" }, s = { "m1", "m2" }, gone = "v" } }
    local seen = {}
    local res = run(function(_, c)
      local st = c.store
      st.incrby("n", 2)
      seen.n = st.get("n")
      st.hset("h", "a", 1)
      st.hincrby("h", "a", 4)
      seen.h = st.hgetall("h")
      st.srem("s", "m1")
      st.sadd("s", "m3")
      seen.m1, seen.m3 = st.sismember("s", "m1"), st.sismember("s", "m3")
      st.del("gone")
      seen.gone, seen.gone_exists = st.get("gone"), st.exists("gone")
      st.set("t", "x", 60)
      seen.ttl, seen.ttl_n = st.ttl("t"), st.ttl("n")
      seen.missing = st.get("missing")
    end, ctx)
    assert.equals("ok", res.outcome, res.error)
    assert.same({ n = "7", h = { a = "5", b = "x" }, m1 = false, m3 = true, gone = nil,
                  gone_exists = false, ttl = 60, ttl_n = -1, missing = nil }, seen)
    assert.same({ n = "7", h = { a = "5", b = "x" }, s = { m2 = true, m3 = true }, t = "x" },
                ctx.stored)
  end)

  it("applies nothing when the handler fails, retries or is rejected", function()
    local ctx = testing.ctx{ store = { n = 1 } }
    for _, fail in ipairs {
      function() error("boom") end,
      function(c) c.retry("later") end,
      function(c) c.reject("never") end,
    } do
      local res = run(function(_, c)
        c.store.incrby("n", 10)
        c.store.set("other", "x")
        fail(c)
      end, ctx)
      assert.are_not.equals("ok", res.outcome)
      assert.same({ n = "1" }, ctx.stored)
    end
    -- and the next run starts from the state as it was
    local before
    assert.equals("ok", run(function(_, c)
      before = c.store.get("n")
      c.store.incrby("n", 1)
    end, ctx).outcome)
    assert.equals("1", before)
    assert.same({ n = "2" }, ctx.stored)
  end)

  it("follows the fake clock for TTLs", function()
    local ctx = testing.ctx()
    run(function(_, c) c.store.set("k", "v", 10) end, ctx)
    ctx.clock:advance(4)
    local ttl
    run(function(_, c) ttl = c.store.ttl("k") end, ctx)
    assert.equals(6, ttl)
    ctx.clock:advance(7)
    local v
    run(function(_, c) v = c.store.get("k") end, ctx)
    assert.is_nil(v)
  end)

  it("checks its arguments and limits like the runtime", function()
    local ctx = testing.ctx{ store_max_writes = 2, store_max_value_bytes = 4 }
    local errs = {}
    run(function(_, c)
      local st = c.store
      -- called through pcall, each error still names the line that called
      -- (the pcall's), as the runtime does: checked, then cut off
      local function try(f, ...)
        local line = debug.getinfo(1, "l").currentline + 2
        local where = debug.getinfo(1, "S").short_src .. ":" .. line .. ": "
        local ok, err = pcall(f, ...)
        assert.equals(where, err:sub(1, #where))
        errs[#errs + 1] = ok and "no error" or err:sub(#where + 1)
      end
      try(st.get)
      try(st.get, 5)
      try(st.set, "k", {})
      try(st.set, "k", "toolong")
      try(st.set, "k", "v", -1)
      try(st.incrby, "k", 1.5)
      try(st.sadd, "k")
      st.incrby("n", 1)
      try(st.hset, "n", "f", "v")
      st.set("a", "1")
      try(st.set, "b", "1")
    end, ctx)
    assert.same({
      S.nargs:format("get(key)", 1, "", 0),
      S.key:format("get", "number"),
      S.value:format("set", "value", "table"),
      S.value_len:format("set", "value", 7, 4),
      S.ttl:format("set", "-1"),
      S.int_range:format("incrby", "n", "1.5"),
      S.members:format("sadd", 1),
      "ctx.store.hset: " .. S.kind:format("warren:store:n", "a string"),
      "ctx.store.set: " .. S.max_writes:format(2),
    }, errs)
  end)

  it("is not available without idempotency, nor in init", function()
    local ctx = testing.ctx{ idempotency = false }
    local res = run(function(_, c) c.store.get("k") end, ctx)
    assert.equals("error", res.outcome)
    assert.matches(S.unavailable:format("get"), res.error, 1, true)
    local ok, err = testing.init({ handle = function() end,
                                   init = function(c) c.store.get("k") end })
    assert.is_nil(ok)
    assert.matches(E.phase:format("store.get", E.phase_init), err, 1, true)
  end)

  -- What the sidecar's commit script decides, the kit decides with the same script.
  describe("at commit, as the sidecar", function()
    local refund = handler(function(event, c)
      c.store.hincrby("customer:c-7", "refunded_cents", event.data.amount)
      c.publish("", "refund.done", { id = event.id })
    end)

    it("refuses a write of another type than the stored key's: store-refused", function()
      local ctx = testing.ctx{ store = { ["customer:c-7"] = "500" } }
      local res = testing.run(refund, testing.event{ id = "r-1", data = { amount = 100 } }, ctx)
      assert.equals("ok", res.outcome) -- the handler ran to the end ...
      assert.equals("refused", res.commit) -- ... and the commit refused its writes
      assert.equals("store-refused", res.reason)
      assert.equals(S.refused:format("ctx.store.hincrby: key warren:store:customer:c-7 holds "
                                     .. "a string in Redis"), res.error)
      assert.same({ ["customer:c-7"] = "500" }, ctx.stored) -- nothing applied
      assert.equals(1, #res.published) -- published before the commit, as in the sidecar
      -- over a hash the same message applies
      ctx = testing.ctx{ store = { ["customer:c-7"] = { refunded_cents = 500 } } }
      res = testing.run(refund, testing.event{ id = "r-1", data = { amount = 100 } }, ctx)
      assert.equals("applied", res.commit)
      assert.same({ ["customer:c-7"] = { refunded_cents = "600" } }, ctx.stored)
    end)

    it("buffers such a write and answers reads as the runtime: Redis refuses the base",
       function()
      local ctx = testing.ctx{ store = { k = "text" } }
      local seen = {}
      local res = run(function(_, c)
        c.store.hset("k", "f", "v")
        seen.f = c.store.hget("k", "f") -- answered by the message's own write
        seen.g = { pcall(c.store.hget, "k", "g") } -- needs Redis's hash: WRONGTYPE
      end, ctx)
      assert.equals("ok", res.outcome)
      assert.equals("v", seen.f)
      assert.is_false(seen.g[1])
      assert.matches("ctx.store.hget: " .. S.wrongtype, seen.g[2], 1, true)
      assert.equals("refused", res.commit)
    end)

    it("finds a conflict when a value it read changed before the commit", function()
      local take = handler(function(_, c)
        local left = tonumber(c.store.get("stock:tea"))
        if left > 0 then
          c.store.incrby("stock:tea", -1)
        end
      end)
      local ctx = testing.ctx{ store = { ["stock:tea"] = 5 } }
      local res = testing.run(take, testing.event{ id = "o-1" }, ctx,
                              { store_at_commit = { ["stock:tea"] = 3 } })
      assert.equals("ok", res.outcome)
      assert.equals("conflict", res.commit)
      assert.is_nil(res.reason)
      assert.equals(S.conflict:format("conflict: warren:store:stock:tea changed since the "
                                      .. "handler read it"), res.error)
      assert.same({ ["stock:tea"] = "3" }, ctx.stored) -- the other message's, not ours
      -- the sidecar runs it again, from fresh state
      res = testing.run(take, testing.event{ id = "o-1" }, ctx)
      assert.equals("applied", res.commit)
      assert.same({ ["stock:tea"] = "2" }, ctx.stored)
      -- a blind write does not conflict
      res = testing.run(handler(function(_, c) c.store.incrby("stock:tea", -1) end),
                        testing.event{ id = "o-2" }, ctx,
                        { store_at_commit = { ["stock:tea"] = 10, gone = false } })
      assert.equals("applied", res.commit)
      assert.same({ ["stock:tea"] = "9" }, ctx.stored)
    end)

    it("checks its options", function()
      assert.has_error(function()
        testing.run(refund, testing.event{}, testing.ctx(), { store_at_comit = {} })
      end, "testing.run: unknown option 'store_at_comit'")
      assert.has_error(function()
        testing.run(refund, testing.event{}, testing.ctx(), { store_at_commit = 5 })
      end, "testing.run: store_at_commit must be a table, got number")
    end)
  end)
end)
