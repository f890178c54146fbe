-- tap_output: busted's TAP output handler, made safe for spec files that do
-- not load. tests/lua/run_busted.sh counts TAP lines (CI reads its
-- "N passed, N failed"), and busted 2.1.1's TAP handler crashes on the error of
-- a file that fails to load (its element has no currentline), losing the
-- error's message. This handler gives such elements a position first, then
-- lets TAP report them as a "not ok" line with the message.
--
-- Use: busted -o tests/lua/tap_output.lua (tests/lua/run_busted.sh passes its
-- full path).

return function(options)
  local busted = require "busted"
  local handler = require "busted.outputHandlers.TAP"(options)

  -- Runs before TAP's own error subscriber (priority 1: ahead of it). The
  -- base handler, ahead of us, keeps a reference to DEBUG as the element's
  -- trace when the element has none: fill in that table.
  busted.subscribe({ "error" }, function(element, _, _, debug)
    local name = type(element) == "table" and tostring(element.name or "?") or "?"
    for _, trace in ipairs { type(element) == "table" and element.trace or false,
                             type(debug) == "table" and debug or false } do
      if trace then
        trace.short_src = trace.short_src or name
        trace.currentline = trace.currentline or 0
      end
    end
    return nil, true
  end, { priority = 1 })

  return handler
end
