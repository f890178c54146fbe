-- lint.lua: the reads and writes of undeclared globals in a handler and the
-- modules it requires, for `warren check` (sidecar/src/lua/lint.c runs it in a
-- plain LuaJIT state of its own; the handler's code is compiled, never run).
--
-- Handler globals are locked: reading a name the sandbox does not define, or
-- assigning any global, raises when that line runs, so a typo such as
-- `store.get` for `ctx.store.get` only shows as a retried error on every
-- attempt. LuaJIT's own compiler says what a global is: every GGET (read) and
-- GSET (write) instruction of every function of the chunk is one, with the
-- line it came from (jit.util, built into LuaJIT: no dependency, no parser of
-- ours). The opcode numbers are not hard-coded: they are read from the
-- bytecode of three tiny chunks compiled here, so another LuaJIT build with
-- another numbering still lints right.
--
-- Called as lint(path, declared, ctx_names): PATH the handler file; DECLARED
-- the names the sandbox defines (set: name -> true, read from the real
-- sandbox by lint.c); CTX_NAMES the fields of ctx (for "did you mean
-- ctx.store?"). Returns a list of {file, line, col, msg}, in file and line
-- order. A file that does not compile is left to the load check (the caller
-- reports its error); modules are the constant names given to `require`,
-- found as the sandbox finds them (the handler's directory, dots as
-- slashes); cjson and cjson.safe are not files.

local ju = require "jit.util"
local bit = require "bit"
local band, rshift = bit.band, bit.rshift

-- The opcode of the instruction at PC of the chunk compiled from SRC.
local function opcode_of(src, pc)
  local f = assert(loadstring(src, "=probe"))
  return band(ju.funcbc(f, pc), 0xff)
end
local GGET = opcode_of("return x", 1)
local GSET = opcode_of("x = y", 2)
local KSTR = opcode_of("local a = 's'", 1)

local function read_file(path)
  local fh = io.open(path, "rb")
  if not fh then
    return nil
  end
  local s = fh:read("*a")
  fh:close()
  return s
end

-- The column of NAME on LINE (1-based): its first use as a name (not a
-- field after '.' or ':') that is assigned (WRITE) or not, else its first
-- use as a name, else 1. LuaJIT keeps lines, not columns: this finds it in
-- the text.
local function column(line, name, write)
  if not line then
    return 1
  end
  local init, first = 1, nil
  while true do
    local s, e = line:find("%f[%w_]" .. name:gsub("%p", "%%%0") .. "%f[^%w_]", init)
    if not s then
      return first or 1
    end
    local before = line:sub(1, s - 1):match("([^%s])%s*$")
    if before ~= "." and before ~= ":" then
      local assigned = line:find("^%s*=[^=]", e + 1) ~= nil or line:find("^%s*=$", e + 1) ~= nil
      if assigned == write then
        return s
      end
      first = first or s
    end
    init = e + 1
  end
end

-- Every function prototype of F (F first), depth first.
local function protos(f, out)
  out = out or {}
  out[#out + 1] = f
  local info = ju.funcinfo(f)
  for i = 1, info.gcconsts or 0 do
    local k = ju.funck(f, -i)
    if type(k) == "proto" then
      protos(k, out)
    end
  end
  return out
end

return function(path, declared, ctx_names)
  local dir = path:match("^(.*)/[^/]*$") or "."
  local problems, seen_files = {}, {}

  local function lint_file(file)
    if seen_files[file] then
      return
    end
    seen_files[file] = true
    local src = read_file(file)
    if not src or src:sub(1, 1) == "\27" then
      return -- the load check says why
    end
    local chunk = loadstring(src, "@" .. file)
    if not chunk then
      return -- the load check reports the syntax error
    end
    local lines = {}
    for l in (src .. "\n"):gmatch("([^\n]*)\n") do
      lines[#lines + 1] = l
    end
    local reported, requires = {}, {}
    for _, f in ipairs(protos(chunk)) do
      local n = ju.funcinfo(f).bytecodes or 0
      local pending -- the register a GGET of require went to
      for pc = 1, n - 1 do
        local ins = ju.funcbc(f, pc)
        local op, a, d = band(ins, 0xff), band(rshift(ins, 8), 0xff), rshift(ins, 16)
        if op == GGET or op == GSET then
          local name = ju.funck(f, -d - 1)
          local line = ju.funcinfo(f, pc).currentline or 0
          local msg
          if op == GSET then
            msg = declared[name]
              and ("assignment to the global '%s' (it replaces the sandbox's own for every "
                   .. "later message: declare a local instead)"):format(name)
              or ("assignment to the global '%s' (handler globals are locked: this line fails "
                  .. "when it runs; declare it local)"):format(name)
          elseif not declared[name] then
            msg = ("read of the undeclared global '%s' (handler globals are locked: this line "
                   .. "fails when it runs"):format(name)
            if ctx_names[name] then
              msg = msg .. ("; did you mean ctx.%s?)"):format(name)
            else
              msg = msg .. "; declare it local, or check the spelling)"
            end
          end
          local id = line .. "\0" .. name .. "\0" .. op
          if msg and not reported[id] then
            reported[id] = true
            problems[#problems + 1] = { file = file, line = line,
                                        col = column(lines[line], name, op == GSET),
                                        msg = msg }
          end
          pending = (op == GGET and name == "require") and a or nil
        elseif op == KSTR and pending and (a == pending + 1 or a == pending + 2) then
          -- the argument of require (its slot is A+1, or A+2 under GC64's frame layout)
          requires[#requires + 1] = ju.funck(f, -d - 1)
          pending = nil
        else
          pending = nil
        end
      end
    end
    for _, name in ipairs(requires) do
      if name ~= "cjson" and name ~= "cjson.safe" and name:match("^[%w_]+[%w_.]*$") then
        lint_file(dir .. "/" .. name:gsub("%.", "/") .. ".lua")
      end
    end
  end

  lint_file(path)
  table.sort(problems, function(x, y)
    if x.file ~= y.file then
      return x.file == path or (y.file ~= path and x.file < y.file)
    end
    if x.line ~= y.line then
      return x.line < y.line
    end
    return x.col < y.col
  end)
  return problems
end
