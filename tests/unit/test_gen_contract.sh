#!/usr/bin/env bash
# gen_contract (sidecar/tools/gen_contract.c): turns sidecar/lua/contract.lua
# into C macros. Checks, on small contracts written here, that %d becomes %lld
# and %s, %.<n>s and %% stay, that texts are escaped for C, that limits are
# plain integers, and that a conversion string.format and printf would not
# print alike (%u, %ld, %x) or a missing table stops the build with a reason.
#   test_gen_contract.sh <gen_contract binary>
set -uo pipefail
GEN=$1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fails=0
check() { # name, condition result
    if [ "$2" = 0 ]; then echo "  ok   $1"; else echo "  FAIL $1"; fails=$((fails + 1)); fi
}
write() { # file, ERRORS body, LIMITS body
    cat >"$1" <<LUA
return {
  ERRORS = { $2 },
  HTTP_ERRORS = { h = "http %s" }, STORE_ERRORS = {}, BREAKER_ERRORS = {},
  LIMITS = { $3 },
}
LUA
}

write "$dir/ok.lua" 'a = "got %d of %s (%.60s) 100%%", b = "say \"hi\"\n" .. "x"' 'max_things = 1000'
"$GEN" "$dir/ok.lua" "$dir/ok.h" 2>"$dir/err"
check "a good contract generates (exit 0)" $?
grep -qxF '#define WR_E_A "got %lld of %s (%.60s) 100%%"' "$dir/ok.h"
check "%d becomes %lld; %s, %.60s and %% stay" $?
grep -qxF '#define WR_E_B "say \"hi\"\nx"' "$dir/ok.h"
check "quotes and newlines are escaped for C" $?
grep -qxF '#define WR_EH_H "http %s"' "$dir/ok.h"
check "HTTP_ERRORS become WR_EH_*" $?
grep -qxF '#define WR_LIMIT_MAX_THINGS 1000' "$dir/ok.h"
check "LIMITS become WR_LIMIT_* integers" $?
printf '#include "ok.h"\n#include <stdio.h>\nint main(void) { printf(WR_E_A "\\n", 3LL, "x", "y"); return WR_LIMIT_MAX_THINGS != 1000; }\n' >"$dir/use.c"
cc -Wall -Wformat -Werror -I"$dir" "$dir/use.c" -o "$dir/use" && [ "$("$dir/use")" = "got 3 of x (y) 100%" ]
check "the macros compile with -Wformat and print what string.format prints" $?

for bad in '%u' '%ld' '%x' '%5d'; do
    write "$dir/bad.lua" "a = \"n $bad\"" 'm = 1'
    "$GEN" "$dir/bad.lua" "$dir/bad.h" 2>"$dir/err"
    rc=$?
    [ $rc -eq 1 ] && grep -qF "gen_contract: ERRORS.a: a conversion other than" "$dir/err" && [ ! -e "$dir/bad.h" ]
    check "$bad is refused with the key named, and no header is left" $?
done
write "$dir/frac.lua" 'a = "x"' 'm = 1.5'
"$GEN" "$dir/frac.lua" "$dir/frac.h" 2>"$dir/err"
[ $? -eq 1 ] && grep -qF "LIMITS.m: not a whole number" "$dir/err"
check "a fractional limit is refused" $?
printf 'return { ERRORS = {} }\n' >"$dir/short.lua"
"$GEN" "$dir/short.lua" "$dir/short.h" 2>"$dir/err"
[ $? -eq 1 ] && grep -qF "HTTP_ERRORS.*: missing" "$dir/err"
check "a missing table is refused" $?

echo "test_gen_contract: $fails failed"
[ "$fails" -eq 0 ]
