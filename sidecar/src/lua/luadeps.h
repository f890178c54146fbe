/*
 * luadeps: which Lua modules a handler's source requires, read from the text.
 *
 * A handler's version (reload.h) covers the handler and the modules it
 * requires, not every .lua file beside it: editing one handler must not
 * change the version of the others sharing the directory. The scan finds
 * `require "name"`, `require 'name'`, `require("name")` and
 * `require [[name]]`; a require whose argument is not a string literal
 * (`require(mod)`) makes the set unknowable, reported as DYNAMIC (the caller
 * then covers every module it could load). Comments and strings are not
 * parsed: a "require 'x'" inside one adds x, which only makes a version
 * cover one file more. cjson and cjson.safe are built in, not files.
 * Pure: no I/O.
 */
#ifndef WR_LUADEPS_H
#define WR_LUADEPS_H

#include <stddef.h>

#define WR_LUADEPS_NAME_MAX 128

/*
 * Scan SRC (LEN bytes) for the modules it requires: up to MAX distinct names
 * into NAMES, in order of first appearance. *DYNAMIC is set to 1 when a
 * require takes something other than a string literal (else left alone).
 * Returns the number of names.
 */
int wr_luadeps_scan(const char *src, size_t len, char (*names)[WR_LUADEPS_NAME_MAX], int max,
                    int *dynamic);

/* The file of module NAME relative to the handler's directory ("a.b" ->
 * "a/b.lua") into OUT. Returns 0, or -1 when the name is not a module name
 * ([A-Za-z0-9_][A-Za-z0-9_.]*) or does not fit. */
int wr_luadeps_path(const char *name, char *out, size_t cap);

#endif
