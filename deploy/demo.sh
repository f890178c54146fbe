#!/usr/bin/env bash
# The demo, one command (the README's first command).
#
# Installs what it needs, builds warren, starts a private RabbitMQ and Redis on
# loopback (data in /var/tmp/warren/, ports 5672 and 6379 unless WR_AMQP_PORT /
# WR_REDIS_PORT say otherwise) and the shop's stand-in services
# (deploy/shop_service.py on 127.0.0.1:8089, or WR_SHOP_PORT), runs warren with
# config/warren.yaml and the order-flow handlers (orders, inventory, payments,
# notifications, and ledger: stock and ledgers in ctx.store), publishes example
# order events (a normal order, a duplicate,
# a payment that fails once, a declined card, an order without items, a cancel
# before its order, a cancel after it, malformed messages, an order that breaks
# its contract (config/contracts.yaml) and an old v1 order that its upcaster
# brings to v2), prints what
# happened to each, the dead-letter queues and what the services recorded,
# then stops everything it started. Safe to run twice in a row.
#
# The handlers find the services at the address in handlers/shop.lua, and a
# handler cannot read the environment (no os.getenv in the sandbox). So warren
# runs a view of the repository in .demo/run/: config/warren.yaml and the
# handlers as symlinks (so edits to them still hot-reload), and a shop.lua of
# its own holding WR_SHOP_PORT's address.
#
# tests/integration/test_demo.py runs the demo on the test suite's servers and
# build, with three more variables: WR_DEMO_BUILD=DIR (use DIR/warren: no
# install, no build), WR_DEMO_STACK=DIR (the servers deploy/local/stack.sh runs
# from DIR: neither started nor stopped here) and WR_DEMO_DIR (the demo's files,
# default .demo/).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DEMO=${WR_DEMO_DIR:-$ROOT/.demo}
export WR_AMQP_PORT=${WR_AMQP_PORT:-5672}
export WR_REDIS_PORT=${WR_REDIS_PORT:-6379}
export WR_SHOP_PORT=${WR_SHOP_PORT:-8089}
export SHOP_URL=http://127.0.0.1:$WR_SHOP_PORT
# The servers' data lives outside the checkout: they run as the rabbitmq and
# redis users, who cannot enter a checkout under a private directory like /root.
STACK=${WR_DEMO_STACK:-/var/tmp/warren/demo-$WR_AMQP_PORT}

mkdir -p "$DEMO"
if [ -n "${WR_DEMO_BUILD:-}" ]; then
    WARREN="$(cd "$WR_DEMO_BUILD" && pwd)/warren"
    [ -x "$WARREN" ] || { echo "demo: no warren in $WR_DEMO_BUILD" >&2; exit 1; }
else
    bash deploy/install-deps.sh
    echo "demo: building warren"
    cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWARREN_TESTS=OFF \
        >"$DEMO/configure.log" 2>&1 || { cat "$DEMO/configure.log"; exit 1; }
    cmake --build build -j2 --target warren >"$DEMO/build.log" 2>&1 ||
        { tail -30 "$DEMO/build.log"; exit 1; }
    WARREN="$ROOT/build/warren"
fi

warren_pid=
shop_pid=
cleanup() {
    if [ -n "$warren_pid" ] && kill -0 "$warren_pid" 2>/dev/null; then
        kill -TERM "$warren_pid" 2>/dev/null || true
        wait "$warren_pid" 2>/dev/null || true
    fi
    if [ -n "$shop_pid" ] && kill -0 "$shop_pid" 2>/dev/null; then
        kill -TERM "$shop_pid" 2>/dev/null || true
        wait "$shop_pid" 2>/dev/null || true
    fi
    [ -n "${WR_DEMO_STACK:-}" ] || bash deploy/local/stack.sh stop "$STACK" || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ -n "${WR_DEMO_STACK:-}" ] || bash deploy/local/stack.sh start "$STACK"
set -a
# shellcheck disable=SC1091
. "$STACK/env"
set +a

# warren's view of the repository: the real config and handlers (symlinks),
# and the services' address for this run.
RUN="$DEMO/run"
rm -rf "$RUN"
mkdir -p "$RUN/config" "$RUN/handlers"
ln -s "$ROOT/config/warren.yaml" "$RUN/config/warren.yaml"
ln -s "$ROOT/config/contracts.yaml" "$RUN/config/contracts.yaml"
ln -s "$ROOT/config/upcasters" "$RUN/config/upcasters"
for f in "$ROOT"/handlers/*.lua; do
    [ "$(basename "$f")" = shop.lua ] || ln -s "$f" "$RUN/handlers/"
done
sed -E "s#^( *url *= *)\"[^\"]*\"#\1\"$SHOP_URL\"#" handlers/shop.lua >"$RUN/handlers/shop.lua"
grep -qF "\"$SHOP_URL\"" "$RUN/handlers/shop.lua" ||
    { echo "demo: handlers/shop.lua has no 'url = \"...\"' line to point at $SHOP_URL" >&2; exit 1; }

echo "demo: warren check -c ${RUN#"$ROOT"/}/config/warren.yaml (config/warren.yaml, shop at $SHOP_URL)"
"$WARREN" check -c "$RUN/config/warren.yaml" 2>&1 | grep -v '"msg":"orders handler loaded"'

echo "demo: starting the shop's services (deploy/shop_service.py) on $SHOP_URL"
/usr/bin/python3 deploy/shop_service.py "$WR_SHOP_PORT" >"$DEMO/shop.log" 2>&1 &
shop_pid=$!
for _ in $(seq 100); do
    grep -q '^ready' "$DEMO/shop.log" && break
    if ! kill -0 "$shop_pid" 2>/dev/null; then
        shop_pid=
        tail -3 "$DEMO/shop.log" >&2
        echo "demo: the shop's services did not start; is port $WR_SHOP_PORT taken? (WR_SHOP_PORT=... moves them)" >&2
        exit 1
    fi
    sleep 0.1
done
grep -q '^ready' "$DEMO/shop.log" || { echo "demo: the shop's services did not answer" >&2; exit 1; }

# Start from empty queues so a second run shows the same story.
/usr/bin/python3 deploy/demo.py reset

: >"$DEMO/warren.log"
WARREN_HTTP_LISTEN=127.0.0.1:0 "$WARREN" run -c "$RUN/config/warren.yaml" >>"$DEMO/warren.log" 2>&1 &
warren_pid=$!
echo "demo: warren running (pid $warren_pid), log in ${DEMO#"$ROOT"/}/warren.log"

WARREN_BIN="$WARREN" WARREN_CONFIG="$RUN/config/warren.yaml" \
    /usr/bin/python3 deploy/demo.py run "$DEMO/warren.log" && story=0 || story=$?

kill -TERM "$warren_pid"
wait "$warren_pid" && rc=0 || rc=$?
warren_pid=
echo "demo: warren stopped on SIGTERM with exit status $rc"
exit "$story"
