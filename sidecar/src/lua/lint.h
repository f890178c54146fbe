/*
 * lint: what `warren check` finds in a handler's source without running it.
 *
 * Handler globals are locked (lua_rt.h): reading a name the sandbox does not
 * define, or assigning a global, raises only when the line runs, so a typo
 * (`store.get` for `ctx.store.get`) becomes a retried error on every attempt
 * that counts against the breaker. wr_lint_handler() finds every such read
 * and write in a handler and in the modules it requires, at FILE:LINE:COL,
 * from LuaJIT's own bytecode (sidecar/lua/lint.lua, run in a plain LuaJIT
 * state of its own; the handler is compiled, never run). What counts as
 * declared is asked of the real sandbox: a probe handler loaded by lua_rt
 * lists its globals (and ctx's fields, for "did you mean ctx.store?"), so the
 * lint and the sandbox cannot disagree about a name.
 */
#ifndef WR_LINT_H
#define WR_LINT_H

#include <stddef.h>

typedef struct {
    char *file; /* the handler or module */
    int line, col;
    char *msg;
} wr_lint_problem;

typedef struct {
    wr_lint_problem *items;
    int count;
} wr_lint_report;

/*
 * Lint the handler at PATH (and the modules it requires by constant name)
 * into OUT (free with wr_lint_report_free). Returns 0, or -1 with ERR when
 * the lint itself could not run (out of memory, the sandbox probe failed). A
 * file that does not compile is not linted (the load check reports it).
 */
int wr_lint_handler(const char *path, wr_lint_report *out, char *err, size_t errcap);

void wr_lint_report_free(wr_lint_report *r);

#endif
