-- fixtures: small handler files written on the fly, for specs that need a
-- handler doing one precise thing (and the line it does it on).
--
-- fixtures.handler(body) writes a handler whose handle(event, ctx) runs BODY,
-- starting at line fixtures.LINE, so a spec can expect an error text like
-- path .. ":3: ctx.publish: ...". Files go to one temporary directory per spec
-- file; call fixtures.cleanup() in a teardown.

local M = {}

--- The line of a handler file where the body given to fixtures.handler starts.
M.LINE = 3

local dir, count = nil, 0

--- The temporary directory of this spec file (made on first use).
-- @treturn string
function M.dir()
  if not dir then
    local name = os.tmpname()
    os.remove(name)
    assert(os.execute("mkdir -p '" .. name .. "'") == 0, "cannot make " .. name)
    dir = name
  end
  return dir
end

--- Write a file in the temporary directory.
-- @tparam string name relative path (sub-directories are made)
-- @tparam string content
-- @treturn string the file's path
function M.file(name, content)
  local path = M.dir() .. "/" .. name
  local sub = path:match("^(.*)/[^/]*$")
  assert(os.execute("mkdir -p '" .. sub .. "'") == 0, "cannot make " .. sub)
  local fh = assert(io.open(path, "wb"))
  fh:write(content)
  fh:close()
  return path
end

--- Write a handler whose handle(event, ctx) runs BODY (from line M.LINE on).
-- @tparam string body Lua statements; `event` and `ctx` are in scope
-- @tparam[opt] string init statements for init(ctx), if the handler has one
-- @treturn string the handler's path
function M.handler(body, init)
  count = count + 1
  local src = "local M = {}\n"
    .. "function M.handle(event, ctx)\n"
    .. body .. "\n"
    .. "end\n"
  if init then
    src = src .. "function M.init(ctx)\n" .. init .. "\nend\n"
  end
  return M.file("h" .. count .. ".lua", src .. "return M\n")
end

--- Remove the temporary directory.
function M.cleanup()
  if dir then
    os.execute("rm -rf '" .. dir .. "'")
    dir, count = nil, 0
  end
end

return M
