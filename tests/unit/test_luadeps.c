/*
 * test_luadeps.c: unit tests for luadeps, the scan of the modules a handler's
 * text requires (what its version covers).
 */
#include <string.h>

#include "check.h"
#include "luadeps.h"

static int scan(const char *src, char (*names)[WR_LUADEPS_NAME_MAX], int *dynamic)
{
    *dynamic = 0;
    return wr_luadeps_scan(src, strlen(src), names, 8, dynamic);
}

static void test_forms(void)
{
    char names[8][WR_LUADEPS_NAME_MAX];
    int dyn;
    const char *src = "local a = require \"util\"\n"
                      "local b = require('lib.money')\n"
                      "local c = require [[fmt]]\n"
                      "local d = require(\"util\")  -- twice: once\n"
                      "local j = require 'cjson'\n"
                      "local s = require('cjson.safe')\n";
    CHECK_INT(scan(src, names, &dyn), 3);
    CHECK_STR(names[0], "util");
    CHECK_STR(names[1], "lib.money");
    CHECK_STR(names[2], "fmt");
    CHECK_INT(dyn, 0);
}

/* Not a require call: a field, a method, a longer name, the word in prose. */
static void test_not_require(void)
{
    char names[8][WR_LUADEPS_NAME_MAX];
    int dyn;
    CHECK_INT(scan("x.require('a') y:require('b') required('c') myrequire('d')\n"
                   "-- we require that the order exists\n",
                   names, &dyn),
              0);
    CHECK_INT(dyn, 0);
}

/* A computed name: anything could be loaded. */
static void test_dynamic(void)
{
    char names[8][WR_LUADEPS_NAME_MAX];
    int dyn;
    CHECK_INT(scan("local m = require(name)\nlocal u = require 'util'\n", names, &dyn), 1);
    CHECK_INT(dyn, 1);
    CHECK_STR(names[0], "util");
}

static void test_path(void)
{
    char p[64];
    CHECK_INT(wr_luadeps_path("lib.money", p, sizeof(p)), 0);
    CHECK_STR(p, "lib/money.lua");
    CHECK_INT(wr_luadeps_path("util", p, sizeof(p)), 0);
    CHECK_STR(p, "util.lua");
    CHECK_INT(wr_luadeps_path("../etc", p, sizeof(p)), -1);
    CHECK_INT(wr_luadeps_path("", p, sizeof(p)), -1);
    CHECK_INT(wr_luadeps_path("a/b", p, sizeof(p)), -1);
    CHECK_INT(wr_luadeps_path("abcdef", p, 8), -1);
}

int main(void)
{
    test_forms();
    test_not_require();
    test_dynamic();
    test_path();
    return check_report("test_luadeps");
}
