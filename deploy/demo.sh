#!/usr/bin/env bash
# The demo, one command (the README's first command).
#
# Installs what it needs, builds warren, starts a private RabbitMQ and Redis on
# loopback (data in /var/tmp/warren/, ports 5672 and 6379 unless WR_AMQP_PORT /
# WR_REDIS_PORT say otherwise), runs `warren run -c config/warren.yaml` with the
# example order handlers, publishes a handful of order events (good ones, a
# rejected order, an order nobody can be notified about, a malformed message,
# one without an id), prints what happened to each, then stops everything it
# started. Safe to run twice in a row.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DEMO="$ROOT/.demo"
export WR_AMQP_PORT=${WR_AMQP_PORT:-5672}
export WR_REDIS_PORT=${WR_REDIS_PORT:-6379}
# The servers' data lives outside the checkout: they run as the rabbitmq and
# redis users, who cannot enter a checkout under a private directory like /root.
STACK=/var/tmp/warren/demo-$WR_AMQP_PORT

bash deploy/install-deps.sh
echo "demo: building warren"
mkdir -p "$DEMO"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWARREN_TESTS=OFF >"$DEMO/configure.log" 2>&1 ||
    { cat "$DEMO/configure.log"; exit 1; }
cmake --build build -j2 --target warren >"$DEMO/build.log" 2>&1 ||
    { tail -30 "$DEMO/build.log"; exit 1; }

warren_pid=
cleanup() {
    if [ -n "$warren_pid" ] && kill -0 "$warren_pid" 2>/dev/null; then
        kill -TERM "$warren_pid" 2>/dev/null || true
        wait "$warren_pid" 2>/dev/null || true
    fi
    bash deploy/local/stack.sh stop "$STACK" || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bash deploy/local/stack.sh start "$STACK"
set -a
# shellcheck disable=SC1091
. "$STACK/env"
set +a

echo "demo: warren check -c config/warren.yaml"
build/warren check -c config/warren.yaml

# Start from empty queues so a second run shows the same story.
/usr/bin/python3 deploy/demo.py reset

: >"$DEMO/warren.log"
build/warren run -c config/warren.yaml >>"$DEMO/warren.log" 2>&1 &
warren_pid=$!
echo "demo: warren running (pid $warren_pid), log in .demo/warren.log"

/usr/bin/python3 deploy/demo.py run "$DEMO/warren.log"

kill -TERM "$warren_pid"
wait "$warren_pid" && rc=0 || rc=$?
warren_pid=
echo "demo: warren stopped on SIGTERM with exit status $rc"
