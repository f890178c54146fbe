# Turn the Redis scripts of sidecar/scripts/ into C strings (scripts.c), so the
# binary carries them and the .lua files stay readable, diffable and testable on
# their own. record.lua holds the helpers both scripts share and is prepended
# to each. The Lua that warren itself runs outside any handler (sidecar/lua/:
# the offline commit model, the handler lint) is embedded as it is, as
# wr_lua_<name>.
#
#   cmake -DSRC=<sidecar/scripts> -DLUA=<sidecar/lua> -DOUT=<scripts.c> -P embed_scripts.cmake
file(READ "${SRC}/record.lua" common)

function(c_literal text out)
  string(REPLACE "\\" "\\\\" text "${text}")
  string(REPLACE "\"" "\\\"" text "${text}")
  string(REPLACE "\n" "\\n\"\n    \"" text "${text}")
  set(${out} "    \"${text}\"" PARENT_SCOPE)
endfunction()

set(body "/* Generated from the .lua files of sidecar/scripts by cmake/embed_scripts.cmake: do not edit. */\n")
string(APPEND body "#include \"scripts.h\"\n\n")
foreach(name claim finish gate)
  file(READ "${SRC}/${name}.lua" text)
  c_literal("${common}\n${text}" lit)
  string(APPEND body "const char wr_script_${name}[] =\n${lit};\n\n")
endforeach()
file(GLOB lua_files "${LUA}/*.lua")
list(SORT lua_files)
foreach(path ${lua_files})
  get_filename_component(name "${path}" NAME_WE)
  file(READ "${path}" text)
  c_literal("${text}" lit)
  string(APPEND body "const char wr_lua_${name}[] =\n${lit};\n\n")
endforeach()
file(WRITE "${OUT}.tmp" "${body}")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUT}.tmp")
