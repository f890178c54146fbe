#!/usr/bin/env bash
# Instructions per message, counted by callgrind: warren's and Redis's, on the
# orders workload, for this tree and (optionally) an earlier revision. A
# benchmark whose figures do not move with the machine's load (see
# tests/bench/instructions.py and tests/bench/README.md). One command, from the
# repository's root, as root:
#
#   bash tests/bench/instructions.sh [--compare REV] [--count N]
#
# Builds warren (RelWithDebInfo) in $BENCH_BUILD_DIR (build) and, with
# --compare, REV in a temporary worktree; starts a private RabbitMQ on
# BENCH_AMQP_PORT (5900) with deploy/local/stack.sh; runs Redis under
# callgrind itself on BENCH_REDIS_PORT+1 (6501). Stops what it started, also
# on failure or Ctrl-C. Takes a few minutes per build (valgrind).
set -euo pipefail
COMPARE=
COUNT=10000
while [ $# -gt 0 ]; do
    case $1 in
        --compare) COMPARE=$2; shift 2 ;;
        --count) COUNT=$2; shift 2 ;;
        *) echo "instructions: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ -f tests/bench/instructions.sh ] || { echo "run me from the repository's root" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "must run as root" >&2; exit 2; }
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 2; }
AMQP_PORT=${BENCH_AMQP_PORT:-5900}
REDIS_PORT=${BENCH_REDIS_PORT:-6500}
BUILD=${BENCH_BUILD_DIR:-build}
STACK_DIR=/var/tmp/warren/bench-$AMQP_PORT
WORK=$(mktemp -d /tmp/warren-instructions.XXXXXX)
chmod 755 "$WORK"
STARTED=0
OLD_TREE=
cleanup() {
    local rc=$?
    if [ "$STARTED" = 1 ]; then
        WR_AMQP_PORT=$AMQP_PORT WR_REDIS_PORT=$REDIS_PORT bash deploy/local/stack.sh stop "$STACK_DIR" >/dev/null 2>&1 || true
    fi
    if [ -n "$OLD_TREE" ]; then
        git worktree remove --force "$OLD_TREE" >/dev/null 2>&1 || true
    fi
    echo "instructions: work directory: $WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "instructions: building warren in $BUILD/"
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$WORK/cmake.log" 2>&1
cmake --build "$BUILD" -j2 --target warren >>"$WORK/cmake.log" 2>&1 || { tail -30 "$WORK/cmake.log"; exit 1; }
BINS=(--warren "$(cd "$BUILD" && pwd)/warren" --label "this tree ($(git rev-parse --short HEAD))")
if [ -n "$COMPARE" ]; then
    OLD_TREE=$WORK/compare
    git worktree add --detach "$OLD_TREE" "$COMPARE" >/dev/null
    echo "instructions: building $COMPARE in $OLD_TREE/build"
    cmake -S "$OLD_TREE" -B "$OLD_TREE/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWARREN_TESTS=OFF >>"$WORK/cmake.log" 2>&1
    cmake --build "$OLD_TREE/build" -j2 --target warren >>"$WORK/cmake.log" 2>&1 || { tail -30 "$WORK/cmake.log"; exit 1; }
    BINS=(--warren "$OLD_TREE/build/warren" --label "$COMPARE" "${BINS[@]}")
fi
if ! WR_AMQP_PORT=$AMQP_PORT WR_REDIS_PORT=$REDIS_PORT bash deploy/local/stack.sh status "$STACK_DIR" >/dev/null 2>&1; then
    echo "instructions: starting RabbitMQ on 127.0.0.1:$AMQP_PORT ($STACK_DIR)"
    STARTED=1
    WR_AMQP_PORT=$AMQP_PORT WR_REDIS_PORT=$REDIS_PORT bash deploy/local/stack.sh start "$STACK_DIR" >"$WORK/stack.log" 2>&1 ||
        { cat "$WORK/stack.log"; exit 1; }
fi
/usr/bin/python3 tests/bench/instructions.py --amqp-url "amqp://guest:guest@127.0.0.1:$AMQP_PORT/" \
    --redis-port $((REDIS_PORT + 1)) --count "$COUNT" --work "$WORK" "${BINS[@]}"
