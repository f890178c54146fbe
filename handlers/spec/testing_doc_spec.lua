-- docs/testing-handlers.md's example of a spec with the kit ("Specs with the
-- test kit") runs
-- here as written, from handlers/ (where its testing.load("payments.lua") finds
-- the handler): an example a reader copies into a repository must pass.

local FIRST_LINE = "-- a spec of handlers/payments.lua"

local function readme_example()
  local f = assert(io.open("../docs/testing-handlers.md"))
  local text = f:read("*a")
  f:close()
  local i = assert(text:find(FIRST_LINE, 1, true),
                   "docs/testing-handlers.md shows the kit's example")
  local j = assert(text:find("```", i, true), "the example's block ends")
  return text:sub(i, j - 1)
end

-- the example's describe and it are this file's
local chunk = assert(loadstring(readme_example(), "=docs/testing-handlers.md (kit example)"))
setfenv(chunk, getfenv(1))
chunk()
