#!/usr/bin/env bash
# warren's realistic-workload benchmark: one command, from the repository's root, as root.
#
#   bash tests/bench/orders.sh                 throughput, 3 rounds, then latency
#                                              at 1,000 and 5,000 msg/s
#   bash tests/bench/orders.sh --latency 2000  latency only, at 2,000 msg/s
#   bash tests/bench/orders.sh --no-latency    throughput only
#
# Builds warren, wr-baseline-consumer and wr-bench-publisher (RelWithDebInfo,
# in $BENCH_BUILD_DIR), starts a private RabbitMQ + Redis on 127.0.0.1 with
# deploy/local/stack.sh (Redis with appendonly yes, appendfsync everysec),
# and drains 50,000 persistent order.created events (5 % producer duplicates,
# 1 % malformed bodies) through a plain rabbitmq-c loop, warren (concurrency 1
# and 2, two kinds of ctx.store write per order) and a hand-written pika +
# redis-py consumer, checking every run's Redis effects against the inputs. Prints
# msg/s, ratios to the plain loop, CPU per message (consumer / RabbitMQ /
# Redis), Redis's command figures, and publish-to-commit latency percentiles.
# tests/bench/orders.py does the work; tests/bench/README.md says how to read it.
# Stops everything it started on exit, failure or Ctrl-C included. Exits 1
# when a run failed (wrong effects, messages left behind).
#
# Options (passed to orders.py run):
#   --count N             messages per throughput run            (50000)
#   --rounds R            rounds, the consumers' order rotating  (3)
#   --consumers LIST      comma-separated subset of baseline,warren-c1,warren-c2,python
#   --seed S              the workload's seed                    (11)
#   --latency RATES       latency runs only, at these msg/s (comma-separated)
#   --no-latency          throughput runs only
#   --latency-seconds S   length of each latency run             (10)
#   --settle S            seconds between a prefill and its run  (2)
#   --keep-logs           keep every consumer log in the work directory
# Environment:
#   BENCH_AMQP_PORT   RabbitMQ port of the private stack     (5900)
#   BENCH_REDIS_PORT  Redis port of the private stack        (6500)
#   BENCH_DIST_PORT   RabbitMQ's Erlang distribution port    (stack.sh's: AMQP port + 20000)
#   BENCH_BUILD_DIR   build directory                        (build)
#   BENCH_NO_BUILD    1: use the build directory as it is
set -euo pipefail

AMQP_PORT=${BENCH_AMQP_PORT:-5900}
REDIS_PORT=${BENCH_REDIS_PORT:-6500}
DIST_PORT=${BENCH_DIST_PORT:-}
STACK_DIR=/var/tmp/warren/bench-$AMQP_PORT
BUILD=${BENCH_BUILD_DIR:-build}
PY=/usr/bin/python3

say() { echo "orders: $*"; }
die() { echo "orders: error: $*" >&2; exit 1; }

[ -f CMakeLists.txt ] && [ -f tests/bench/orders.sh ] && [ -f deploy/local/stack.sh ] ||
    die "run me from the repository's root: bash tests/bench/orders.sh"
[ "$(id -u)" -eq 0 ] ||
    die "must run as root (deploy/local/stack.sh starts the servers as their users)"
for v in AMQP_PORT REDIS_PORT; do
    case ${!v} in ''|*[!0-9]*) die "$v=${!v} is not a number" ;; esac
done

# Options: translated for orders.py; unknown ones are refused here.
DRIVER_ARGS=()
while [ $# -gt 0 ]; do
    case $1 in
        --count|--rounds|--consumers|--seed|--latency-seconds|--settle)
            [ $# -ge 2 ] || die "$1 needs a value"
            DRIVER_ARGS+=("$1" "$2"); shift 2 ;;
        --latency)
            [ $# -ge 2 ] || die "--latency needs rates, e.g. --latency 1000,5000"
            DRIVER_ARGS+=(--latency "$2" --latency-only); shift 2 ;;
        --no-latency) DRIVER_ARGS+=(--latency off); shift ;;
        --keep-logs) DRIVER_ARGS+=(--keep-logs); shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done

[ -x "$PY" ] && "$PY" -c 'import pika, redis' 2>/dev/null ||
    die "$PY with python3-pika and python3-redis is needed" \
        "(apt-get install python3-pika python3-redis)"
command -v redis-cli >/dev/null || die "redis-cli is needed (apt-get install redis-tools)"

WORK=$(mktemp -d /tmp/warren-orders.XXXXXX)
T_START=$SECONDS

# ------------------------------------------------------------------ cleanup

STACK_STARTED=0
CHILD_PID=       # the driver, while it runs
stack() {   # command: deploy/local/stack.sh on our ports
    env WR_AMQP_PORT="$AMQP_PORT" WR_REDIS_PORT="$REDIS_PORT" \
        ${DIST_PORT:+WR_RABBIT_DIST_PORT=$DIST_PORT} bash deploy/local/stack.sh "$1" "$STACK_DIR"
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    if [ -n "$CHILD_PID" ] && kill -0 "$CHILD_PID" 2>/dev/null; then
        say "stopping the driver (pid $CHILD_PID) and what it started"
        kill -TERM "$CHILD_PID" 2>/dev/null
        for ((i = 0; i < 600; i++)); do
            kill -0 "$CHILD_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$CHILD_PID" 2>/dev/null && kill -KILL "$CHILD_PID" 2>/dev/null
        wait "$CHILD_PID" 2>/dev/null
    fi
    if [ "$STACK_STARTED" = 1 ]; then
        say "stopping the bench stack ($STACK_DIR)"
        stack stop >"$WORK/stack-stop.log" 2>&1 ||
            { echo "orders: stack.sh stop failed:"; cat "$WORK/stack-stop.log"; }
    fi
    say "work directory (configs, results.jsonl, logs): $WORK"
    say "the whole script took $((SECONDS - T_START))s"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------ machine facts

NPROC=$(nproc)
say "machine: $NPROC CPU(s) ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo))," \
    "$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) RAM, kernel $(uname -r)"
say "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
say "the consumer under test, RabbitMQ (beam.smp), Redis and this script's poller" \
    "all share these $NPROC cores"
say "RabbitMQ/Redis servers already running on this machine (other stacks):" \
    "beam.smp x$(pgrep -c -x beam.smp || true), redis-server x$(pgrep -c -x redis-server || true)"

# ------------------------------------------------------------------ build

if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
    say "building warren, wr-baseline-consumer and wr-bench-publisher (RelWithDebInfo) in $BUILD/"
    cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$WORK/cmake.log" 2>&1 ||
        { cat "$WORK/cmake.log"; die "cmake configure failed"; }
    cmake --build "$BUILD" -j2 --target warren wr-baseline-consumer wr-bench-publisher \
        >>"$WORK/cmake.log" 2>&1 ||
        { tail -40 "$WORK/cmake.log"; die "build failed"; }
fi
BUILD_ABS=$(cd "$BUILD" && pwd)
WARREN=$BUILD_ABS/warren
BASELINE=$BUILD_ABS/wr-baseline-consumer
PUBLISHER=$BUILD_ABS/wr-bench-publisher
[ -x "$WARREN" ] || die "$WARREN is missing"
[ -x "$BASELINE" ] || die "$BASELINE is missing"
[ -x "$PUBLISHER" ] || die "$PUBLISHER is missing"
say "build type: $(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BUILD/CMakeCache.txt")," \
    "$("$WARREN" --version 2>&1 | head -1)," \
    "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')" \
    "$(git diff --quiet HEAD 2>/dev/null || echo '(with local changes)')"

# ------------------------------------------------------------------ stack

if stack status >/dev/null 2>&1; then
    say "the bench stack in $STACK_DIR is already running" \
        "(not started by this run: left running at the end)"
else
    say "starting RabbitMQ on 127.0.0.1:$AMQP_PORT and Redis on 127.0.0.1:$REDIS_PORT ($STACK_DIR)"
    STACK_STARTED=1
    stack start >"$WORK/stack-start.log" 2>&1 ||
        { cat "$WORK/stack-start.log"; die "stack.sh start failed"; }
fi
set -a
# shellcheck disable=SC1091
. "$STACK_DIR/env"
set +a
case $WARREN_AMQP_URL in
    amqp://*@127.*) ;;
    *) die "WARREN_AMQP_URL is not on loopback: $WARREN_AMQP_URL" ;;
esac
case $WARREN_REDIS_URL in
    redis://127.*) ;;
    *) die "WARREN_REDIS_URL is not on loopback: $WARREN_REDIS_URL" ;;
esac
RABBIT_PID=$(tr -dc '0-9' <"$STACK_DIR/rabbit/rabbit.pid" 2>/dev/null || true)
REDIS_PID=$(tr -dc '0-9' <"$STACK_DIR/redis/redis.pid" 2>/dev/null || true)
[ -n "$RABBIT_PID" ] && [ -n "$REDIS_PID" ] || die "no pid files in $STACK_DIR"
rconf() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" config get "$1" | paste -sd' '; }
say "RabbitMQ pid $RABBIT_PID, Redis pid $REDIS_PID" \
    "(Redis: $(rconf appendonly), $(rconf appendfsync))"

# ------------------------------------------------------------------ the runs

# In the background and waited for, so that a signal reaches our trap at once
# (bash defers traps until a foreground command ends) and cleanup can stop it.
rc=0
"$PY" tests/bench/orders.py run --work "$WORK" --src "$(pwd)" \
    --amqp-url "$WARREN_AMQP_URL" --redis-url "$WARREN_REDIS_URL" \
    --rabbit-pid "$RABBIT_PID" --redis-pid "$REDIS_PID" \
    --warren "$WARREN" --baseline "$BASELINE" --publisher "$PUBLISHER" "${DRIVER_ARGS[@]}" &
CHILD_PID=$!
wait "$CHILD_PID" || rc=$?
CHILD_PID=
[ "$rc" -eq 0 ] ||
    say "FAILED: some runs failed (exit status $rc); see above and $WORK/results.jsonl"
exit "$rc"
