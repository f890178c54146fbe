-- c_source: read the string literals of warren's C sources, for the specs that
-- keep warren.testing in step with the runtime (sidecar/src/lua/lua_rt.c).
--
-- C splits long texts into adjacent literals ("ctx.publish: " "exchange ...")
-- with comments between them; strings() joins each run of adjacent literals
-- into the text the compiler sees, unescaped, so a spec can ask whether a
-- kit text appears in the C source byte for byte. Not a C parser: enough for
-- literals, comments and character constants.

local M = {}

local simple = {
  n = "\n", t = "\t", r = "\r", a = "\a", b = "\b", f = "\f", v = "\v",
  ["\\"] = "\\", ['"'] = '"', ["'"] = "'", ["?"] = "?",
}

-- The sources sit in one folder per layer (sidecar/src/<layer>/<file>).
local LAYERS = { "", "core/", "util/", "config/", "redis/", "amqp/", "lua/", "contracts/",
                 "daemon/", "cli/" }

local function open_in(dir, file)
  for _, l in ipairs(LAYERS) do
    local fh = io.open(dir .. "/" .. l .. file, "rb")
    if fh then
      return fh
    end
  end
  return nil
end

--- Where the sidecar's sources are, seen from handlers/ (nil when absent,
-- e.g. when the kit was copied into another repository).
-- @treturn string|nil the directory
function M.dir()
  for _, d in ipairs { "../sidecar/src", "sidecar/src" } do
    local fh = open_in(d, "lua_rt.c")
    if fh then
      fh:close()
      return d
    end
  end
  return nil
end

--- The content of a file, or nil when it cannot be read. A path
-- "<sources>/<file>" is found in whichever layer folder holds the file.
-- @tparam string path
-- @treturn string|nil
function M.read(path)
  local fh = io.open(path, "rb")
  if not fh then
    local dir, file = path:match("^(.*)/([^/]+)$")
    fh = dir and open_in(dir, file)
  end
  if not fh then
    return nil
  end
  local s = fh:read("*a")
  fh:close()
  return s
end

-- Parse the literal starting at the quote at I; return its text and the
-- index after the closing quote.
local function literal_at(src, i)
  local out, j = {}, i + 1
  while true do
    local c = src:sub(j, j)
    if c == "" then
      error("c_source: unterminated string literal at byte " .. i)
    elseif c == '"' then
      return table.concat(out), j + 1
    elseif c == "\\" then
      local e = src:sub(j + 1, j + 1)
      if simple[e] then
        out[#out + 1] = simple[e]
        j = j + 2
      elseif e == "x" then
        local hex = src:match("^%x+", j + 2)
        out[#out + 1] = string.char(tonumber(hex, 16) % 256)
        j = j + 2 + #hex
      elseif e:match("[0-7]") then
        local oct = src:match("^[0-7][0-7]?[0-7]?", j + 1)
        out[#out + 1] = string.char(tonumber(oct, 8) % 256)
        j = j + 1 + #oct
      else
        error("c_source: unknown escape \\" .. e .. " at byte " .. j)
      end
    else
      out[#out + 1] = c
      j = j + 1
    end
  end
end

--- Every run of adjacent string literals in SRC, joined and unescaped.
-- @tparam string src C source text
-- @treturn {{text=string,pos=number},...} in source order (pos: byte of the first quote)
function M.strings(src)
  local groups, cur = {}, nil
  local i, n = 1, #src
  while i <= n do
    local c = src:sub(i, i)
    local two = src:sub(i, i + 1)
    if two == "/*" then
      local e = src:find("*/", i + 2, true)
      i = (e or n) + 2
    elseif two == "//" then
      local e = src:find("\n", i + 2, true)
      i = (e or n) + 1
    elseif c == '"' then
      local text, nexti = literal_at(src, i)
      if cur then
        cur.text = cur.text .. text
      else
        cur = { text = text, pos = i }
        groups[#groups + 1] = cur
      end
      i = nexti
    elseif c == "'" then
      -- a character constant such as '"' or '\0': skip it whole
      local j = i + 1
      if src:sub(j, j) == "\\" then
        j = j + 2
      else
        j = j + 1
      end
      local e = src:find("'", j, true)
      i = (e or n) + 1
      cur = nil
    elseif c:match("%s") then
      i = i + 1
    else
      cur = nil
      i = i + 1
    end
  end
  return groups
end

--- The text of the literal that initializes NAME (`... NAME[] = "..." "...";`).
-- @tparam string src C source text
-- @tparam string name the array's name
-- @treturn string|nil
function M.initializer(src, name)
  local at = src:find(name .. "[] =", 1, true)
  if not at then
    return nil
  end
  for _, g in ipairs(M.strings(src)) do
    if g.pos > at then
      return g.text
    end
  end
  return nil
end

--- A printf format as the kit writes it: C-only conversions become the
-- string.format ones that print the same text (%ld -> %d, %zu -> %d,
-- %.60s -> %s: a precision only bounds a buffer; %m, strerror -> %s).
-- @tparam string text a C format string
-- @treturn string
function M.normalize(text)
  return (text:gsub("%%l+d", "%%d"):gsub("%%z[ud]", "%%d"):gsub("%%%.%d+s", "%%s")
              :gsub("%%m", "%%s"))
end

--- A set of every joined literal in the given files (missing files are
-- skipped), each normalized (see normalize).
-- @tparam {string,...} paths
-- @treturn table text -> true
function M.text_set(paths)
  local set = {}
  for _, p in ipairs(paths) do
    local src = M.read(p)
    if src then
      for _, g in ipairs(M.strings(src)) do
        set[M.normalize(g.text)] = true
      end
    end
  end
  return set
end

return M
