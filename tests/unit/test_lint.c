/*
 * test_lint: undeclared globals in handler sources (lint.c, sidecar/lua/lint.lua):
 * reads and writes at FILE:LINE:COL in the handler and in the modules it
 * requires, with the exact texts `warren check` prints; what the sandbox
 * declares (string, ctx's hint) is not reported; a file that does not compile
 * is left to the load check.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "lint.h"

static char dir[] = "/tmp/wr-test-lint-XXXXXX";

static const char *put(const char *name, const char *text)
{
    static char paths[8][256];
    static int next;
    char *p = paths[next++ % 8];
    snprintf(p, 256, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    fputs(text, f);
    fclose(f);
    return p;
}

/* The report as "FILE:LINE:COL: msg" lines (FILE without the directory). */
static const char *lines_of(const wr_lint_report *r)
{
    static char buf[8192];
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < r->count; i++) {
        const char *f = strrchr(r->items[i].file, '/');
        used += (size_t)snprintf(buf + used, sizeof(buf) - used, "%s:%d:%d: %s\n",
                                 f ? f + 1 : r->items[i].file, r->items[i].line, r->items[i].col,
                                 r->items[i].msg);
    }
    return buf;
}

#define READ_MSG "(handler globals are locked: this line fails when it runs; "

int main(void)
{
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    char err[512];
    wr_lint_report r;

    /* the typo, a counter kept in a global, a builtin replaced, and a
     * module with its own mistake; sandbox names (string, pairs, require,
     * cjson through require) are fine */
    const char *h = put("refunds.lua", "local M = {}\n"
                                       "local util = require \"util\"\n"
                                       "local json = require(\"cjson\")\n"
                                       "function M.handle(event, ctx)\n"
                                       "  local v = store.get(\"customer:\" .. event.data.c)\n"
                                       "  seen = (seen or 0) + 1\n"
                                       "  for k in pairs(event.data) do string.len(k) end\n"
                                       "  tostring = nil\n"
                                       "  return util.go(ctx, json)\n"
                                       "end\n"
                                       "return M\n");
    put("util.lua", "local M = {}\n"
                    "function M.go(ctx)\n"
                    "  ctx.log.info(\"x\", { n = os.time(), io = io })\n"
                    "end\n"
                    "return M\n");
    CHECK_INT(wr_lint_handler(h, &r, err, sizeof(err)), 0);
    CHECK_STR(lines_of(&r),
              "refunds.lua:5:13: read of the undeclared global 'store' " READ_MSG
              "did you mean ctx.store?)\n"
              "refunds.lua:6:3: assignment to the global 'seen' (handler globals are locked: "
              "this line fails when it runs; declare it local)\n"
              "refunds.lua:6:11: read of the undeclared global 'seen' " READ_MSG
              "declare it local, or check the spelling)\n"
              "refunds.lua:8:3: assignment to the global 'tostring' (it replaces the sandbox's "
              "own for every later message: declare a local instead)\n"
              "util.lua:3:43: read of the undeclared global 'io' " READ_MSG
              "declare it local, or check the spelling)\n");
    wr_lint_report_free(&r);

    /* nothing to say about a clean handler; a field named like a global is a field */
    h = put("clean.lua", "local M = {}\n"
                         "local cache = {}\n"
                         "function M.handle(event, ctx)\n"
                         "  cache[event.id] = ctx.store and true\n"
                         "  local t = { store = 1 }\n"
                         "  return t.store, math.max(1, 2), bit.band(1, 3), coroutine.running()\n"
                         "end\n"
                         "return M\n");
    CHECK_INT(wr_lint_handler(h, &r, err, sizeof(err)), 0);
    CHECK_STR(lines_of(&r), "");
    wr_lint_report_free(&r);

    /* what the sandbox takes away is undeclared: jit, ffi (through require it is a
     * module file), debug, package, dofile */
    h = put("escape.lua", "return { handle = function() return jit, debug.traceback, package, "
                          "dofile end }\n");
    CHECK_INT(wr_lint_handler(h, &r, err, sizeof(err)), 0);
    CHECK_INT(r.count, 4);
    wr_lint_report_free(&r);

    /* a file that does not compile, or does not exist, is the load check's business */
    h = put("broken.lua", "local M = {}\nfunction M.handle(event, ctx)\n  if then end\nend\n");
    CHECK_INT(wr_lint_handler(h, &r, err, sizeof(err)), 0);
    CHECK_INT(r.count, 0);
    wr_lint_report_free(&r);

    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "could not remove %s\n", dir);
    }
    return check_report("test_lint");
}
