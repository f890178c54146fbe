-- The kit and the sidecar share one handler contract: the texts and limits of
-- sidecar/lua/contract.lua and the sandbox of sidecar/lua/sandbox.lua. The
-- build turns the first into C macros (sidecar/tools/gen_contract.c) and
-- embeds the second; the kit loads both files. These specs check each end:
-- the kit's tables are the file's, and the built binary (WARREN_BIN) carries
-- the file's sandbox and every text the C side raises.

local testing = require "warren.testing"

local SIDECAR_LUA = "../sidecar/lua/"

local function read(path)
  local fh = assert(io.open(path, "rb"))
  local s = fh:read("*a")
  fh:close()
  return s
end

local contract = assert(loadfile(SIDECAR_LUA .. "contract.lua"))()

-- A text as the C side holds it: gen_contract writes %d as %lld.
local function c_text(text)
  return (text:gsub("%%%%", "\0"):gsub("%%d", "%%lld"):gsub("%z", "%%%%"))
end

-- Texts only the kit raises: no C code has them.
local KIT_ONLY = {
  HTTP_ERRORS = { no_fake = true },
  STORE_ERRORS = { wrongtype = true }, -- Redis's own reply, not warren's
}

local GROUPS = { "ERRORS", "HTTP_ERRORS", "STORE_ERRORS", "BREAKER_ERRORS" }

describe("the handler contract (sidecar/lua/contract.lua)", function()
  it("is where the kit's texts and limits come from", function()
    for _, g in ipairs(GROUPS) do
      assert.same(contract[g], testing[g])
    end
    assert.equals(contract.LIMITS.http_max_header_line, testing.HTTP_MAX_HEADER_LINE)
  end)

  it("holds format strings that string.format and printf print alike", function()
    for _, g in ipairs(GROUPS) do
      for key, text in pairs(contract[g]) do
        local rest = text:gsub("%%%%", ""):gsub("%%%.%d+s", ""):gsub("%%[sd]", "")
        assert.is_nil(rest:find("%", 1, true), g .. "." .. key .. ": " .. text)
      end
    end
  end)

  it("is the sandbox the kit runs (sidecar/lua/sandbox.lua)", function()
    assert.equals(read(SIDECAR_LUA .. "sandbox.lua"), testing._SANDBOX_LUA)
  end)
end)

describe("the built sidecar (WARREN_BIN)", function()
  local bin
  setup(function()
    local path = os.getenv("WARREN_BIN")
    assert(path and path ~= "", "WARREN_BIN is not set: build warren and run the specs with "
           .. "tests/lua/run_busted.sh")
    bin = read(path)
  end)

  it("embeds sidecar/lua/sandbox.lua as it is", function()
    assert.truthy(bin:find(read(SIDECAR_LUA .. "sandbox.lua"), 1, true))
  end)

  it("raises every text of contract.lua (the C side uses each one)", function()
    local missing = {}
    for _, g in ipairs(GROUPS) do
      for key, text in pairs(contract[g]) do
        if not (KIT_ONLY[g] and KIT_ONLY[g][key]) and not bin:find(c_text(text), 1, true) then
          missing[#missing + 1] = g .. "." .. key .. ": " .. c_text(text)
        end
      end
    end
    table.sort(missing)
    assert.same({}, missing)
  end)
end)
