#!/usr/bin/env bash
# The mutation exercise: does the safety net hold? Each mutation breaks one
# property on purpose (a small anchored edit of the source: the table is in
# tests/mutations/mutations.py, with what each one breaks), and the
# integration tests that stand for those properties must notice.
#
#   bash tests/mutations.sh [MUTATION...]      (default: every mutation)
#
# Not part of deploy/test.sh: one run builds the sidecar six times and runs the
# slow integration tests (lease, idempotency, reload, crash, store_crash) once
# on the unmutated code and once per mutation: an hour or more on 2 cores.
#
# It never touches the tree it is run from: the tree (tracked and untracked
# files, not the ignored build directories) is copied to a temporary
# directory, built there (build-mut/, -DWARREN_TESTS=ON), and tested against a
# private RabbitMQ and Redis that deploy/local/stack.sh starts on loopback, with
# their data in /var/tmp/warren/mutations-<amqp port> (stopped and removed at
# the end, whatever happens). Steps:
#   1. the selected tests on the unmutated code: a test that fails there tells
#      nothing about a mutation, so the run stops (exit 2);
#   2. per mutation: restore the pristine sources, apply the mutation (an anchor
#      that is no longer in the source fails loudly: exit 2, update the anchor),
#      build, run its tests, note which failed;
#   3. the table "mutation -> tests that failed", with each failing test's first
#      failed checks.
# Exit status: 0 every mutation was caught; 1 a mutation was not caught; 2 the
# exercise could not run (build, servers, baseline failure, missing anchor).
#
# Environment:
#   WR_TEST_AMQP_PORT, WR_TEST_REDIS_PORT, WR_TEST_DIST_PORT   (required)
#                the servers' ports (AMQP, Redis, Erlang distribution); no
#                defaults: the suite's usual ports may be serving someone else's
#                run, and a clash costs the exercise (stack.sh refuses a port in
#                use)
#   MUT_TESTS    run these tests (stems: "lease crash") instead of each
#                mutation's list
#   MUT_FIRST=1  stop a mutation at its first failing test (faster; the table
#                then names one test per mutation)
#   MUT_BASELINE=0  skip step 1 (only when the baseline is known to pass)
#   MUT_TIMEOUT  seconds one test may run (default 900); past it, it fails
#   MUT_KEEP=1   keep the temporary copy; the logs are always kept (the path
#                is printed)
#   JOBS         build parallelism (default 2)
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
AMQP_PORT=${WR_TEST_AMQP_PORT:-}
REDIS_PORT=${WR_TEST_REDIS_PORT:-}
DIST_PORT=${WR_TEST_DIST_PORT:-}
TIMEOUT=${MUT_TIMEOUT:-900}
JOBS=${JOBS:-2}
PY=/usr/bin/python3
DEFS="$ROOT/tests/mutations/mutations.py"

say() { echo "mutations: $*"; }
die() { say "$*" >&2; exit 2; }

if [ -z "$AMQP_PORT" ] || [ -z "$REDIS_PORT" ] || [ -z "$DIST_PORT" ]; then
    die "set WR_TEST_AMQP_PORT, WR_TEST_REDIS_PORT and WR_TEST_DIST_PORT (servers of your own)"
fi

if [ $# -gt 0 ]; then
    selected=("$@")
else
    mapfile -t selected < <("$PY" "$DEFS" list | cut -f1)
fi
for m in "${selected[@]}"; do
    "$PY" "$DEFS" tests "$m" >/dev/null || exit 2
done

work=$(mktemp -d /tmp/warren-mutations.XXXXXX)
logs=$(mktemp -d /tmp/warren-mutations-logs.XXXXXX)
copy="$work/tree"
# the servers' data: a fresh directory the rabbitmq and redis users can enter
stack_dir="/var/tmp/warren/mutations-$AMQP_PORT"
stack_up=0
test_pid=""
cleanup() {
    if [ -n "$test_pid" ]; then
        kill -9 -- -"$test_pid" 2>/dev/null # the test running when we were stopped
    fi
    if [ "$stack_up" -eq 1 ]; then
        WR_AMQP_PORT=$AMQP_PORT WR_REDIS_PORT=$REDIS_PORT WR_RABBIT_DIST_PORT=$DIST_PORT \
            bash "$copy/deploy/local/stack.sh" stop "$stack_dir" >"$logs/stack-stop.log" 2>&1 &&
            rm -rf "$stack_dir"
    fi
    if [ "${MUT_KEEP:-0}" = 1 ]; then
        say "the copy is kept in $copy"
    else
        rm -rf "$work"
    fi
    say "logs in $logs"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "copying $ROOT to $copy"
mkdir -p "$copy"
git -C "$ROOT" ls-files -z --cached --others --exclude-standard |
    tar -C "$ROOT" --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -C "$copy" -xf - ||
    die "cannot copy the tree"
DEFS="$copy/tests/mutations/mutations.py" # from here on, the copy's table
"$PY" "$DEFS" snapshot "$copy" || die "cannot keep the pristine sources"

build() {
    cmake --build "$copy/build-mut" --target warren -j"$JOBS" >"$logs/build-$1.log" 2>&1
}
say "configuring and building in $copy/build-mut"
# no -Werror: a mutation may leave a variable unused, and that is not the point
cmake -S "$copy" -B "$copy/build-mut" -DWARREN_TESTS=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DWARREN_WERROR=OFF \
    -DWR_TEST_AMQP_PORT="$AMQP_PORT" -DWR_TEST_REDIS_PORT="$REDIS_PORT" \
    -DWR_TEST_DIST_PORT="$DIST_PORT" >"$logs/configure.log" 2>&1 || die "configure failed: $logs/configure.log"
build pristine || die "the build failed: $logs/build-pristine.log"

say "starting RabbitMQ ($AMQP_PORT) and Redis ($REDIS_PORT) in $stack_dir"
stack_up=1
rm -rf "$stack_dir"
WR_AMQP_PORT=$AMQP_PORT WR_REDIS_PORT=$REDIS_PORT WR_RABBIT_DIST_PORT=$DIST_PORT \
    bash "$copy/deploy/local/stack.sh" start "$stack_dir" >"$logs/stack-start.log" 2>&1 ||
    die "the servers did not start: $logs/stack-start.log"

# Run tests/integration/test_NAME.py of the copy; its log goes to LOG. The test
# runs in a session of its own, so whatever it leaves behind (a warren it
# started, after a timeout) is killed with it. Returns the test's exit status.
run_test() { # name log
    WR_STACK_DIR="$stack_dir" WR_BUILD_DIR="$copy/build-mut" WR_SOURCE_DIR="$copy" \
        WR_RABBIT_DIST_PORT="$DIST_PORT" setsid "$PY" "$copy/tests/integration/test_$1.py" \
        >"$2" 2>&1 &
    local pid=$! waited=0 rc
    test_pid=$pid
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$waited" -ge "$TIMEOUT" ]; then
            echo "mutations: timed out after $TIMEOUT s" >>"$2"
            kill -9 -- -"$pid" 2>/dev/null
            break
        fi
        sleep 1
        waited=$((waited + 1))
    done
    wait "$pid"
    rc=$?
    kill -9 -- -"$pid" 2>/dev/null # what the test left running
    test_pid=""
    return "$rc"
}

tests_of() { # mutation
    if [ -n "${MUT_TESTS:-}" ]; then
        echo "$MUT_TESTS"
    else
        "$PY" "$DEFS" tests "$1"
    fi
}

if [ "${MUT_BASELINE:-1}" != 0 ]; then
    all=()
    for m in "${selected[@]}"; do
        for t in $(tests_of "$m"); do
            [[ " ${all[*]-} " == *" $t "* ]] || all+=("$t")
        done
    done
    for t in "${all[@]}"; do
        t0=$SECONDS
        if run_test "$t" "$logs/baseline-$t.log"; then
            say "baseline: test_$t passes ($((SECONDS - t0)) s)"
        else
            grep -E "^  failed: " "$logs/baseline-$t.log" | head -5 >&2
            die "baseline: test_$t fails on the unmutated code ($logs/baseline-$t.log): fix that first"
        fi
    done
fi

declare -A caught why
for m in "${selected[@]}"; do
    "$PY" "$DEFS" apply "$m" "$copy" || die "$m could not be applied (see above)"
    if ! build "$m"; then
        grep -E "error" "$logs/build-$m.log" | head -20 >&2
        die "$m does not build: $logs/build-$m.log"
    fi
    caught[$m]=""
    why[$m]=""
    for t in $(tests_of "$m"); do
        t0=$SECONDS
        if run_test "$t" "$logs/$m-$t.log"; then
            say "$m: test_$t passes ($((SECONDS - t0)) s)"
        else
            say "$m: test_$t FAILS ($((SECONDS - t0)) s)"
            caught[$m]+="$t "
            why[$m]+="$(grep -E "^  failed: |^mutations: timed out" "$logs/$m-$t.log" | head -2 |
                cut -c1-160 | sed "s/^ *failed: /    test_$t: /; s/^mutations: /    test_$t: /")"$'\n'
            if [ "${MUT_FIRST:-0}" = 1 ]; then
                break
            fi
        fi
    done
done
"$PY" "$DEFS" restore "$copy"

echo
echo "mutation                   tests that failed"
missed=0
for m in "${selected[@]}"; do
    if [ -z "${caught[$m]}" ]; then
        printf "%-26s %s\n" "$m" "NONE: NOT CAUGHT"
        missed=1
    else
        printf "%-26s %s\n" "$m" "${caught[$m]% }"
        printf "%s" "${why[$m]}"
    fi
done
[ "$missed" -eq 0 ] || exit 1
exit 0
