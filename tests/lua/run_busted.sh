#!/usr/bin/env bash
# Run the busted specs of the Lua side under LuaJIT: the warren.testing kit's
# (lua/spec, configured by lua/.busted) and the example handlers' (handlers/spec,
# configured by handlers/.busted).
#
# busted's own summary is not what CI reads: this script has busted write TAP,
# counts it, and ends with one line "N passed, N failed". A pending spec
# (`pending(...)`) is not a pass: each one is named and counts as failed. It
# exits non-zero when a spec fails, errors or is pending, when busted stops
# before the end of its report, when no spec ran at all, or when busted is
# missing (deploy/install-deps.sh installs it: Debian package lua-busted).
# With arguments, the first names the suite (lua or handlers) and the rest go
# to busted, e.g. `bash tests/lua/run_busted.sh handlers spec/orders_spec.lua`.
set -uo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root_dir="$(cd "$script_dir/../.." && pwd)"

fail_early() {
    echo "run_busted: $1" >&2
    echo "0 passed, 1 failed"
    exit 1
}

installer="bash deploy/install-deps.sh installs it"
command -v busted >/dev/null 2>&1 ||
    fail_early "busted is not installed (Debian package lua-busted; $installer)"
command -v luajit >/dev/null 2>&1 ||
    fail_early "luajit is not installed (Debian package luajit2; $installer)"

# the contract spec runs the real binary (warren exec): point it at a build
if [ -z "${WARREN_BIN:-}" ]; then
    for b in "$script_dir/../../build-test/warren" "$script_dir/../../build/warren"; do
        if [ -x "$b" ]; then
            WARREN_BIN="$(cd "$(dirname "$b")" && pwd)/warren"
            break
        fi
    done
fi
export WARREN_BIN="${WARREN_BIN:-}"

suites=(lua handlers)
if [ $# -gt 0 ]; then
    case "$1" in
    lua | handlers) suites=("$1") ;;
    *) fail_early "the first argument names the suite: lua or handlers (not '$1')" ;;
    esac
    shift
fi

tap="$(mktemp)"
trap 'rm -f "$tap"' EXIT

# each suite's TAP ends with its plan (1..N); the counts below add them up
rc=0
runs=0
for suite in "${suites[@]}"; do
    echo "run_busted: $suite/ (${suite}/.busted)"
    (cd "$root_dir/$suite" && busted --lua=luajit -o "$script_dir/tap_output.lua" "$@") |
        tee -a "$tap"
    st=${PIPESTATUS[0]}
    [ "$st" -ne 0 ] && rc=$st
    runs=$((runs + 1))
done

# ok N - name | ok N - # SKIP name | not ok N - name | 1..N (the plan, printed last)
read -r passed failed pending plan < <(awk -v RUNS="$runs" '
    /^not ok [0-9]+ - / { failed++; next }
    /^ok [0-9]+ - # SKIP/ { pending++; next }
    /^ok [0-9]+ - / { passed++; next }
    /^1\.\.[0-9]+$/ { plan += substr($0, 4); plans++ }
    END { printf "%d %d %d %s\n", passed, failed, pending, (plans == RUNS ? plan : "-") }
' "$tap")

if [ "$plan" = "-" ]; then
    echo "run_busted: a busted run stopped before the end of its report (exit status $rc)" >&2
    failed=$((failed + 1))
elif [ $((passed + failed + pending)) -ne "$plan" ]; then
    echo "run_busted: busted announced $plan results, the report holds" \
        "$((passed + failed + pending))" >&2
    failed=$((failed + 1))
elif [ $((passed + failed + pending)) -eq 0 ]; then
    echo "run_busted: no spec ran" >&2
    failed=$((failed + 1))
fi
if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
    echo "run_busted: busted exited with status $rc" >&2
    failed=1
fi

if [ "$pending" -gt 0 ]; then
    # a spec that does not run checks nothing: it cannot be reported as passed
    echo "run_busted: $pending pending spec(s), counted as failed:" >&2
    sed -nE 's/^ok [0-9]+ - # SKIP/  pending:/p' "$tap" >&2
    failed=$((failed + pending))
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
