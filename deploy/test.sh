#!/usr/bin/env bash
# The whole test suite, one command (the README's second command; .ci/run calls it).
#
#   1. installs what it needs (deploy/install-deps.sh: apt-get, only when missing)
#   2. builds twice: build-asan/ with AddressSanitizer + UBSan for the unit
#      tests, build-test/ (optimised, -Werror) for the integration tests
#   3. C unit tests (ctest -L unit, under the sanitizers)
#   4. fuzzing (ctest -L fuzz in build-fuzz/, built with clang-14): each
#      libFuzzer target of tests/fuzz/ runs WR_FUZZ_SECONDS (default 30) from
#      its seed corpus under ASan + UBSan, two at a time; a crash, sanitizer
#      report or slow input is a failed test (input in build-fuzz/fuzz-artifacts/)
#   5. busted specs of the handlers and the Lua test kit (LuaJIT), including
#      the contract between the kit and the runtime
#   6. integration tests (ctest -L integration): a private RabbitMQ and Redis
#      on loopback ports 17672/17379 (and AMQP over TLS on 17671) started by
#      the `stack` fixture and stopped by its cleanup even when a test fails
#
# Ends with one summary line: "N passed, N failed". Exit status 0 only when
# nothing failed. Safe to run twice in a row.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
JOBS=${JOBS:-2}

bash deploy/install-deps.sh || exit 1

build() { # dir, extra cmake args...
    local dir=$1
    mkdir -p "$dir"
    shift
    cmake -S "$ROOT" -B "$dir" -DWARREN_WERROR=ON "$@" >"$dir/configure.log" 2>&1 ||
        { cat "$dir/configure.log"; return 1; }
    cmake --build "$dir" -j"$JOBS" >"$dir/build.log" 2>&1 ||
        { grep -E "error|warning" "$dir/build.log" | head -50; return 1; }
}
mkdir -p build-test build-asan build-fuzz
echo "test: building (sanitizers) in build-asan/"
build build-asan -DWARREN_SANITIZE=ON -DWARREN_TESTS=ON -DCMAKE_BUILD_TYPE=Debug || exit 1
echo "test: building (release) in build-test/"
build build-test -DWARREN_TESTS=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo || exit 1
echo "test: building (libFuzzer targets, clang-14) in build-fuzz/"
CC=clang-14 cmake -S "$ROOT" -B build-fuzz -DWARREN_WERROR=ON -DWARREN_FUZZ=ON -DWARREN_TESTS=OFF \
    -DCMAKE_BUILD_TYPE=Debug -DWR_FUZZ_SECONDS="${WR_FUZZ_SECONDS:-30}" >build-fuzz/configure.log 2>&1 ||
    { cat build-fuzz/configure.log; exit 1; }
cmake --build build-fuzz -j"$JOBS" --target fuzz >build-fuzz/build.log 2>&1 ||
    { grep -E "error|warning" build-fuzz/build.log | head -50; exit 1; }

passed=0
failed=0
tally() { # log file of one ctest run
    local line
    line=$(grep -E "tests passed, [0-9]+ tests? failed out of [0-9]+" "$1" | tail -1)
    if [ -z "$line" ]; then
        failed=$((failed + 1)) # ctest itself failed to run
        return
    fi
    local total fails
    total=$(echo "$line" | sed -E 's/.*out of ([0-9]+).*/\1/')
    fails=$(echo "$line" | sed -E 's/.* ([0-9]+) tests? failed.*/\1/')
    passed=$((passed + total - fails))
    failed=$((failed + fails))
}

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

echo "test: unit tests (AddressSanitizer + UBSan)"
ctest --test-dir build-asan -L unit --output-on-failure -j"$JOBS" 2>&1 | tee build-asan/unit.log
tally build-asan/unit.log

echo "test: fuzzing (libFuzzer, ${WR_FUZZ_SECONDS:-30} s per target, ASan + UBSan)"
ctest --test-dir build-fuzz -L fuzz --output-on-failure -j"$JOBS" 2>&1 | tee build-fuzz/fuzz.log
tally build-fuzz/fuzz.log

echo "test: handler specs (busted under LuaJIT)"
WARREN_BIN="$ROOT/build-test/warren" bash tests/lua/run_busted.sh 2>&1 | tee build-test/busted.log
line=$(grep -E "^[0-9]+ passed, [0-9]+ failed" build-test/busted.log | tail -1)
if [ -n "$line" ]; then
    passed=$((passed + $(echo "$line" | cut -d' ' -f1)))
    failed=$((failed + $(echo "$line" | cut -d' ' -f3)))
else
    failed=$((failed + 1)) # busted did not run
fi

echo "test: integration tests (real RabbitMQ and Redis on loopback)"
ctest --test-dir build-test -L integration --output-on-failure 2>&1 | tee build-test/integration.log
tally build-test/integration.log

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
