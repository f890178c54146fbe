#!/usr/bin/env bash
# The whole test suite, one command (the README's second command; .ci/run calls it).
#
#   1. installs what it needs (deploy/install-deps.sh: apt-get, only when missing)
#   2. builds: build-asan/ with AddressSanitizer + UBSan for the unit tests,
#      build-test/ (optimised, -Werror) for the integration tests, build-tsan/
#      (warren with ThreadSanitizer) for the thread tests
#   3. C unit tests (ctest -L unit, under the sanitizers)
#   4. fuzzing (ctest -L fuzz in build-fuzz/, built with clang-14): each
#      libFuzzer target of tests/fuzz/ runs WR_FUZZ_SECONDS (default 20) from
#      its seed corpus under ASan + UBSan, two at a time; a crash, sanitizer
#      report or slow input is a failed test (input in build-fuzz/fuzz-artifacts/)
#   5. busted specs of the handlers and the Lua test kit (LuaJIT), including
#      the contract between the kit and the runtime
#   6. integration tests (ctest -L integration): a private RabbitMQ and Redis
#      on loopback ports 17672/17379 (and AMQP over TLS on 17671) started by
#      the `stack` fixture and stopped by its cleanup even when a test fails;
#      the tests of the threads that share state (reload, metrics, breaker,
#      shutdown, status) run a second time against build-tsan/ (warren built
#      with ThreadSanitizer, tests/tsan/run.py): a TSan report fails them
#
#
# `deploy/test.sh --ha` runs the HA tests instead (tests/ha/, ctest -L ha:
# Redis with a replica and Sentinel, and a 3-node RabbitMQ cluster, started by
# deploy/local/ha.sh on loopback ports 17801-17813 and 17601-17603, plus the
# stack above). They take minutes and are not part of the default run; run
# them at least once per change to the connection code (rconn.c, broker.c,
# the reconnect paths of worker.c).
#
# Ends with one summary line: "N passed, N failed". Only what ran and passed
# counts as passed: a pending busted spec, a skipped or not-run ctest test and
# a test missing from ctest's report count as failed; the stack fixtures are
# not tests (a fixture that fails counts as a failure). Exit status 0 only when
# nothing failed. Safe to run twice in a row.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
JOBS=${JOBS:-2}

bash deploy/install-deps.sh || exit 1

if [ "${1:-}" = "--ha" ]; then
    mkdir -p build-test
    echo "test: building (release) in build-test/"
    cmake -S "$ROOT" -B build-test -DWARREN_WERROR=ON -DWARREN_TESTS=ON \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo >build-test/configure.log 2>&1 ||
        { cat build-test/configure.log; exit 1; }
    cmake --build build-test -j"$JOBS" >build-test/build.log 2>&1 ||
        { grep -E "error|warning" build-test/build.log | head -50; exit 1; }
    echo "test: HA tests (Redis Sentinel, RabbitMQ cluster; ctest -L ha)"
    rm -f build-test/ha.xml
    ctest --test-dir build-test -L ha --output-on-failure \
        --output-junit "$ROOT/build-test/ha.xml" 2>&1 | tee build-test/ha.log
    line=$(/usr/bin/python3 deploy/ctest_tally.py build-test ha "$ROOT/build-test/ha.xml")
    if ! [[ "$line" =~ ^[0-9]+\ [0-9]+$ ]]; then
        echo "0 passed, 1 failed"
        exit 1
    fi
    echo "${line% *} passed, ${line#* } failed"
    [ "${line#* }" -eq 0 ]
    exit
elif [ $# -gt 0 ]; then
    echo "usage: deploy/test.sh [--ha]" >&2
    exit 2
fi

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
echo "test: building (ThreadSanitizer, warren only) in build-tsan/"
mkdir -p build-tsan
cmake -S "$ROOT" -B build-tsan -DWARREN_WERROR=ON -DWARREN_TSAN=ON -DWARREN_TESTS=OFF \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo >build-tsan/configure.log 2>&1 ||
    { cat build-tsan/configure.log; exit 1; }
cmake --build build-tsan -j"$JOBS" --target warren >build-tsan/build.log 2>&1 ||
    { grep -E "error|warning" build-tsan/build.log | head -50; exit 1; }
echo "test: building (release) in build-test/"
build build-test -DWARREN_TESTS=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DWR_TSAN_BUILD_DIR="$ROOT/build-tsan" || exit 1
echo "test: building (libFuzzer targets, clang-14) in build-fuzz/"
CC=clang-14 cmake -S "$ROOT" -B build-fuzz -DWARREN_WERROR=ON -DWARREN_FUZZ=ON -DWARREN_TESTS=OFF \
    -DCMAKE_BUILD_TYPE=Debug -DWR_FUZZ_SECONDS="${WR_FUZZ_SECONDS:-20}" >build-fuzz/configure.log 2>&1 ||
    { cat build-fuzz/configure.log; exit 1; }
cmake --build build-fuzz -j"$JOBS" --target fuzz >build-fuzz/build.log 2>&1 ||
    { grep -E "error|warning" build-fuzz/build.log | head -50; exit 1; }

passed=0
failed=0
# Count one ctest run explicitly (deploy/ctest_tally.py): a test passed only
# when ctest's JUnit report says it ran and passed; skipped, not run, disabled
# and missing tests are failures; the stack fixtures are not tests.
tally() { # build dir, label, JUnit report of that run
    local line
    line=$(/usr/bin/python3 deploy/ctest_tally.py "$1" "$2" "$3")
    if ! [[ "$line" =~ ^[0-9]+\ [0-9]+$ ]]; then
        failed=$((failed + 1)) # the tally itself failed
        return
    fi
    passed=$((passed + ${line% *}))
    failed=$((failed + ${line#* }))
}

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

echo "test: unit tests (AddressSanitizer + UBSan)"
rm -f build-asan/unit.xml
ctest --test-dir build-asan -L unit --output-on-failure -j"$JOBS" \
    --output-junit "$ROOT/build-asan/unit.xml" 2>&1 | tee build-asan/unit.log
tally build-asan unit "$ROOT/build-asan/unit.xml"

echo "test: fuzzing (libFuzzer, ${WR_FUZZ_SECONDS:-20} s per target, ASan + UBSan)"
rm -f build-fuzz/fuzz.xml
ctest --test-dir build-fuzz -L fuzz --output-on-failure -j"$JOBS" \
    --output-junit "$ROOT/build-fuzz/fuzz.xml" 2>&1 | tee build-fuzz/fuzz.log
tally build-fuzz fuzz "$ROOT/build-fuzz/fuzz.xml"

echo "test: handler specs (busted under LuaJIT)"
WARREN_BIN="$ROOT/build-test/warren" bash tests/lua/run_busted.sh 2>&1 | tee build-test/busted.log
# run_busted.sh counts pending specs as failed
line=$(grep -E "^[0-9]+ passed, [0-9]+ failed" build-test/busted.log | tail -1)
if [ -n "$line" ]; then
    passed=$((passed + $(echo "$line" | cut -d' ' -f1)))
    failed=$((failed + $(echo "$line" | cut -d' ' -f3)))
else
    failed=$((failed + 1)) # busted did not run
fi

echo "test: integration tests (real RabbitMQ and Redis on loopback)"
rm -f build-test/integration.xml
ctest --test-dir build-test -L integration --output-on-failure \
    --output-junit "$ROOT/build-test/integration.xml" 2>&1 | tee build-test/integration.log
tally build-test integration "$ROOT/build-test/integration.xml"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
