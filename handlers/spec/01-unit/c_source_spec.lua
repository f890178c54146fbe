-- Specs of spec/helpers/c_source, the reader of C string literals that the
-- kit's contract specs rely on: if it misread lua_rt.c, they would compare
-- the kit with the wrong text.

local c_source = require "spec.helpers.c_source"

describe("c_source", function()
  it("joins adjacent literals across lines and comments, and unescapes them", function()
    local src = 'f("ctx.publish: exchange must be a string (\\"\\" for the default "\n'
      .. '  /* a comment with "quotes" */ "exchange), got %s", x);\n'
      .. '// "not a literal"\n'
      .. 'g("tab\\there\\n" "oct\\101 hex\\x41 \\\\ \\\'");\n'
    local texts = {}
    for _, g in ipairs(c_source.strings(src)) do
      texts[#texts + 1] = g.text
    end
    assert.same({ 'ctx.publish: exchange must be a string ("" for the default exchange), got %s',
                  "tab\there\noctA hexA \\ '" }, texts)
  end)

  it("does not take a quote in a character constant for a string", function()
    local texts = {}
    for _, g in ipairs(c_source.strings("if (c == '\"') { s = \"a\"; } t = '\\'' ; u = \"b\";")) do
      texts[#texts + 1] = g.text
    end
    assert.same({ "a", "b" }, texts)
  end)

  it("finds the initializer of a named array", function()
    local src = 'static const char other[] = "no";\nstatic const char sandbox_lua[] =\n'
      .. '    "local G = ...\\n"\n    /* why */ "return G\\n";\n'
    assert.equals("local G = ...\nreturn G\n", c_source.initializer(src, "sandbox_lua"))
    assert.is_nil(c_source.initializer(src, "missing"))
  end)

  it("normalizes C-only conversions to the ones string.format writes the same way", function()
    assert.equals("http %s %s: %d", c_source.normalize("http %s %s: %ld"))
    assert.equals("%s: cannot open handler: %s", c_source.normalize("%s: cannot open handler: %m"))
    assert.equals("header '%s' got %d", c_source.normalize("header '%.60s' got %zu"))
  end)
end)
