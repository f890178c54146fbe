#!/usr/bin/env bash
# warren throughput benchmark: one command, from the repository's root, as root.
#
#   bash tests/bench/run.sh
#
# Builds warren and wr-baseline-consumer (build/, RelWithDebInfo), starts a
# private RabbitMQ + Redis on 127.0.0.1 (ports 5900/6500, data in
# /var/tmp/warren/bench-5900), and drains the same number of prefilled
# messages through four consumers, BENCH_ROUNDS times each, in rotating order:
#
#   baseline      tests/bench/baseline_consumer.c: count and ack, nothing else
#   warren-c1     warren, idempotency on (default), no-op handler, concurrency 1
#   warren-c2     the same with concurrency 2
#   warren-noidem warren, concurrency 1, defaults.idempotency.enabled: false
#   warren-store  warren-c1 with a realistic handler: reads the decoded JSON body
#                 and makes three ctx.store writes per message (a stock counter,
#                 a ledger hash field, the order's record), committed with the
#                 idempotency record
#
# All use prefetch 100 and ack with `multiple` every 50 messages (warren:
# batch_size 50). Prints the median msg/s of each and its ratio to the
# baseline, the CPU each process spent per message, and the Redis keys the
# idempotent runs wrote. See tests/bench/README.md. Stops everything it
# started on exit, failure or Ctrl-C included.
#
# Environment:
#   BENCH_COUNT       messages per run                       (50000)
#   BENCH_ROUNDS      runs of each variant                   (3)
#   BENCH_SETTLE      seconds to let the broker settle after a prefill (2)
#   BENCH_AMQP_PORT   RabbitMQ port of the private stack     (5900)
#   BENCH_REDIS_PORT  Redis port of the private stack        (6500)
#   BENCH_VARIANTS    subset, e.g. "baseline warren-c1"      (all five)
#   BENCH_KEEP_LOGS   1: keep every warren log in the work directory
#   BENCH_NO_BUILD    1: skip the cmake build (use the build directory as it is)
#   BENCH_BUILD_DIR   build directory                        (build)
set -euo pipefail

COUNT=${BENCH_COUNT:-50000}
ROUNDS=${BENCH_ROUNDS:-3}
SETTLE=${BENCH_SETTLE:-2}
AMQP_PORT=${BENCH_AMQP_PORT:-5900}
REDIS_PORT=${BENCH_REDIS_PORT:-6500}
VARIANTS=${BENCH_VARIANTS:-"baseline warren-c1 warren-c2 warren-noidem warren-store"}
STACK_DIR=/var/tmp/warren/bench-$AMQP_PORT
BUILD=${BENCH_BUILD_DIR:-build}
PY=/usr/bin/python3
PREFETCH=100
BATCH=50

say() { echo "bench: $*"; }
die() { echo "bench: error: $*" >&2; exit 1; }

[ -f CMakeLists.txt ] && [ -f tests/bench/run.sh ] && [ -f deploy/local/stack.sh ] ||
    die "run me from the repository's root: bash tests/bench/run.sh"
[ "$(id -u)" -eq 0 ] || die "must run as root (deploy/local/stack.sh starts the servers as their users)"
for v in COUNT ROUNDS SETTLE AMQP_PORT REDIS_PORT; do
    case ${!v} in ''|*[!0-9]*) die "$v=${!v} is not a number" ;; esac
done
[ "$COUNT" -ge 1 ] && [ "$ROUNDS" -ge 1 ] || die "BENCH_COUNT and BENCH_ROUNDS must be at least 1"
for v in $VARIANTS; do
    case $v in baseline|warren-c1|warren-c2|warren-noidem|warren-store) ;;
        *) die "unknown variant '$v'" ;; esac
done
[ -x "$PY" ] && "$PY" -c 'import pika' 2>/dev/null || die "$PY with python3-pika is needed (apt-get install python3-pika)"
command -v redis-cli >/dev/null || die "redis-cli is needed (apt-get install redis-tools)"

SRC=$(pwd)
WORK=$(mktemp -d /tmp/warren-bench.XXXXXX)
RESULTS=$WORK/results.jsonl
: >"$RESULTS"
CLK_TCK=$(getconf CLK_TCK)

# ------------------------------------------------------------------ cleanup

STACK_STARTED=0
WARREN_PID=
CHILD_PID=       # the helper (prefill, poller, baseline) running right now
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    if [ -n "$WARREN_PID" ] && kill -0 "$WARREN_PID" 2>/dev/null; then
        say "stopping warren (pid $WARREN_PID)"
        stop_pid "$WARREN_PID" 30
    fi
    if [ -n "$CHILD_PID" ] && kill -0 "$CHILD_PID" 2>/dev/null; then
        say "stopping pid $CHILD_PID"
        stop_pid "$CHILD_PID" 5
    fi
    if [ "$STACK_STARTED" = 1 ]; then
        say "stopping the bench stack ($STACK_DIR)"
        WR_AMQP_PORT=$AMQP_PORT WR_REDIS_PORT=$REDIS_PORT \
            bash deploy/local/stack.sh stop "$STACK_DIR" >"$WORK/stack-stop.log" 2>&1 ||
            { echo "bench: stack.sh stop failed:"; cat "$WORK/stack-stop.log"; }
    fi
    say "work directory (configs, results, logs): $WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# SIGTERM, wait up to $2 seconds, then SIGKILL; only the pid we were given.
stop_pid() {
    local pid=$1 t=$2 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < t * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "pid $pid still running after ${t}s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
    return 0
}

# Run a helper in the background with its stdout in OUTFILE and wait for it,
# so that a signal to this script is handled at once (bash defers traps until
# a foreground command ends) and cleanup can stop the helper by its pid. The
# redirection is the child's only: cleanup's messages still reach our stdout.
# Returns the helper's status.
run_child() {   # outfile command...
    local rc=0 outfile=$1
    shift
    "$@" >"$outfile" &
    CHILD_PID=$!
    wait "$CHILD_PID" || rc=$?
    CHILD_PID=
    return "$rc"
}

# utime+stime of a live process, in clock ticks ("" when it is gone).
cpu_ticks() {
    [ -n "$1" ] && [ -r "/proc/$1/stat" ] || { echo ""; return; }
    sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}
# Busy ticks of the whole machine (all CPUs): user nice system irq softirq steal.
sys_busy() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
now_s() { date +%s.%N; }
# Cores' worth of CPU that something other than the processes under test used
# during a run: (machine busy - ours) / wall. The noise indicator of each run.
others_cores() {   # busy0 busy1 ours_s t0 t1
    awk -v a="$1" -v b="$2" -v ours="$3" -v t0="$4" -v t1="$5" -v hz="$CLK_TCK" \
        'BEGIN { w = t1 - t0; if (w <= 0 || ours == "null") { print "null"; exit }
                 x = ((b - a) / hz - ours) / w; printf "%.2f", (x < 0 ? 0 : x) }'
}
sum_s() { awk 'BEGIN { s = 0; for (i = 1; i < ARGC; i++) { if (ARGV[i] == "null") { print "null"; exit } s += ARGV[i] } printf "%.2f", s }' "$@"; }
ticks_to_s() {   # before after -> seconds (or null)
    if [ -n "$1" ] && [ -n "$2" ]; then
        awk -v a="$1" -v b="$2" -v hz="$CLK_TCK" 'BEGIN {printf "%.2f", (b - a) / hz}'
    else
        echo null
    fi
}

# ------------------------------------------------------------------ machine facts

NPROC=$(nproc)
say "machine: $NPROC CPU(s) ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) RAM, kernel $(uname -r)"
say "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
say "the consumer under test, RabbitMQ (beam.smp), Redis and this script's poller all share these $NPROC cores: the numbers are for the whole system, not warren alone"
OTHER_BEAMS=$(pgrep -c -x beam.smp || true)
OTHER_REDIS=$(pgrep -c -x redis-server || true)
say "RabbitMQ/Redis servers already running on this machine before the bench (other stacks): beam.smp x${OTHER_BEAMS:-0}, redis-server x${OTHER_REDIS:-0}"
say "messages per run: $COUNT, rounds: $ROUNDS, variants: $VARIANTS"

# ------------------------------------------------------------------ build

if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
    say "building warren and wr-baseline-consumer (RelWithDebInfo) in $BUILD/"
    cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$WORK/cmake.log" 2>&1 ||
        { cat "$WORK/cmake.log"; die "cmake configure failed"; }
    cmake --build "$BUILD" -j2 --target warren wr-baseline-consumer >>"$WORK/cmake.log" 2>&1 ||
        { tail -40 "$WORK/cmake.log"; die "build failed"; }
fi
BUILD_ABS=$(cd "$BUILD" && pwd)
WARREN=$BUILD_ABS/warren
BASELINE=$BUILD_ABS/wr-baseline-consumer
[ -x "$WARREN" ] || die "$WARREN is missing"
[ -x "$BASELINE" ] || die "$BASELINE is missing"
say "build type: $(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BUILD/CMakeCache.txt"), warren $("$WARREN" --version 2>&1 | head -1)"

HAVE_IDEM=0
REFERENCE=$("$WARREN" config-reference 2>/dev/null || true)   # (no grep -q pipe: pipefail + SIGPIPE)
if grep -q 'defaults.idempotency.enabled' <<<"$REFERENCE"; then
    HAVE_IDEM=1
else
    say "WARNING: this warren has no defaults.idempotency.enabled key: warren-noidem is skipped and the other runs may not touch Redis"
    VARIANTS=$(echo "$VARIANTS" | tr ' ' '\n' | grep -vx warren-noidem | tr '\n' ' ')
fi

# ------------------------------------------------------------------ configs

HANDLER=$WORK/noop.lua
cat >"$HANDLER" <<'EOF'
return { handle = function(event, ctx) end }
EOF
# warren-store: what a small real handler does with prefill.py's bodies
# ({"event":"order.created","order_id":...,"n":...,"total":...}): use the
# decoded JSON, three blind ctx.store writes (no reads: nothing to guard)
STORE_HANDLER=$WORK/store.lua
cat >"$STORE_HANDLER" <<'EOF'
local M = {}
function M.handle(event, ctx)
  local o = event.data
  if type(o) ~= "table" or type(o.order_id) ~= "string" then
    return ctx.reject("not an order")
  end
  local st = ctx.store
  st.incrby("stock:sku-" .. (o.n % 20), -1)
  st.hincrby("ledger:c-" .. (o.n % 500), "total_cents", math.floor(o.total * 100 + 0.5))
  st.hset("order:" .. o.order_id, "state", "created")
end
return M
EOF

queue_of() { echo "bench.$1"; }

write_config() {   # variant file
    local v=$1 f=$2 conc=1 idem="" handler=$HANDLER
    case $v in
        warren-c2) conc=2 ;;
        warren-store) handler=$STORE_HANDLER ;;
        warren-noidem) idem=$'  idempotency:\n    enabled: false\n' ;;
    esac
    {
        echo "# generated by tests/bench/run.sh ($v)"
        echo "amqp:"
        echo "  url: \${WARREN_AMQP_URL}"
        echo "redis:"
        echo "  url: \${WARREN_REDIS_URL}"
        echo "log:"
        echo "  level: info"
        echo "defaults:"
        echo "  prefetch: $PREFETCH"
        echo "  batch_size: $BATCH"
        echo "  concurrency: $conc"
        printf '%s' "$idem"
        echo "shutdown:"
        echo "  grace: 10s"
        echo "subscriptions:"
        echo "  - name: bench"
        echo "    queue: $(queue_of "$v")"
        echo "    handler: $handler"
    } >"$f"
}

# ------------------------------------------------------------------ stack

if WR_AMQP_PORT=$AMQP_PORT WR_REDIS_PORT=$REDIS_PORT bash deploy/local/stack.sh status "$STACK_DIR" >/dev/null 2>&1; then
    say "the bench stack in $STACK_DIR is already running (not started by this run: left running at the end)"
else
    say "starting RabbitMQ on 127.0.0.1:$AMQP_PORT and Redis on 127.0.0.1:$REDIS_PORT ($STACK_DIR)"
    STACK_STARTED=1
    WR_AMQP_PORT=$AMQP_PORT WR_REDIS_PORT=$REDIS_PORT \
        bash deploy/local/stack.sh start "$STACK_DIR" >"$WORK/stack-start.log" 2>&1 ||
        { cat "$WORK/stack-start.log"; die "stack.sh start failed"; }
fi
set -a
# shellcheck disable=SC1091
. "$STACK_DIR/env"
set +a
case $WARREN_AMQP_URL in amqp://*@127.*) ;; *) die "WARREN_AMQP_URL is not on loopback: $WARREN_AMQP_URL" ;; esac
case $WARREN_REDIS_URL in redis://127.*) ;; *) die "WARREN_REDIS_URL is not on loopback: $WARREN_REDIS_URL" ;; esac
RABBIT_PID=$(tr -dc '0-9' <"$STACK_DIR/rabbit/rabbit.pid" 2>/dev/null || true)
REDIS_PID=$(tr -dc '0-9' <"$STACK_DIR/redis/redis.pid" 2>/dev/null || true)
say "RabbitMQ pid ${RABBIT_PID:-?}, Redis pid ${REDIS_PID:-?}"

rcli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" -n 0 "$@"; }

for v in $VARIANTS; do
    case $v in warren-*)
        write_config "$v" "$WORK/$v.yaml"
        "$WARREN" check -c "$WORK/$v.yaml" >"$WORK/$v.check" 2>&1 ||
            { cat "$WORK/$v.check"; die "warren check rejected the $v config ($WORK/$v.yaml)"; } ;;
    esac
done

# ------------------------------------------------------------------ one run

record() {   # variant round json key=value...
    local v=$1 r=$2 json=$3
    shift 3
    "$PY" - "$RESULTS" "$v" "$r" "$json" "$@" <<'PYEOF'
import json, sys
path, v, r, raw = sys.argv[1:5]
labels = {"baseline": "baseline (rabbitmq-c)", "warren-c1": "warren c=1, idempotency on",
          "warren-c2": "warren c=2, idempotency on", "warren-noidem": "warren c=1, idempotency off",
          "warren-store": "warren c=1, JSON + 3 ctx.store writes"}
try:
    rec = json.loads(raw)
except ValueError:
    rec = {"ok": False, "error": "no result: %r" % raw[:200]}
rec.setdefault("ok", rec.get("messages") == rec.get("requested") and not rec.get("idle_timeout"))
for kv in sys.argv[5:]:
    k, val = kv.split("=", 1)
    try:
        rec[k] = json.loads(val)
    except ValueError:
        rec[k] = val
rec.update({"variant": v, "label": labels[v], "round": int(r)})
with open(path, "a") as f:
    f.write(json.dumps(rec) + "\n")
PYEOF
}

prefill() {   # queue
    local q=$1
    "$PY" tests/bench/benchctl.py delete "$WARREN_AMQP_URL" "$q" >/dev/null
    run_child "$WORK/prefill.json" "$PY" tests/bench/prefill.py --url "$WARREN_AMQP_URL" \
        --queue "$q" --count "$COUNT" --id-prefix "$q-$RANDOM$RANDOM" ||
        { cat "$WORK/prefill.json"; die "prefill of $q failed"; }
    say "  prefilled $q: $(cat "$WORK/prefill.json")"
    sleep "$SETTLE"
}

run_baseline() {   # round
    local r=$1 q b0 b1 d0 d1 s0 s1 t0 t1 self mq rd other out rc=0
    q=$(queue_of baseline)
    prefill "$q"
    b0=$(cpu_ticks "$RABBIT_PID"); d0=$(cpu_ticks "$REDIS_PID"); s0=$(sys_busy); t0=$(now_s)
    run_child "$WORK/baseline.out" "$BASELINE" --url "$WARREN_AMQP_URL" --queue "$q" \
        --count "$COUNT" --prefetch "$PREFETCH" --ack-every "$BATCH" --idle-timeout 30 || rc=$?
    b1=$(cpu_ticks "$RABBIT_PID"); d1=$(cpu_ticks "$REDIS_PID"); s1=$(sys_busy); t1=$(now_s)
    out=$(cat "$WORK/baseline.out")
    [ "$rc" -eq 0 ] || say "  baseline exited $rc"
    self=$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1]).get("cpu_s","null"))' "$out" 2>/dev/null || echo null)
    mq=$(ticks_to_s "$b0" "$b1"); rd=$(ticks_to_s "$d0" "$d1")
    other=$(others_cores "$s0" "$s1" "$(sum_s "$self" "$mq" "$rd")" "$t0" "$t1")
    say "  baseline: $out"
    say "  baseline: CPU s: self $self, rabbitmq $mq, redis $rd; other load on the machine: $other cores"
    record baseline "$r" "$out" "consumer_cpu_s=$self" "broker_cpu_s=$mq" "redis_cpu_s=$rd" \
        "other_cores=$other"
}

run_warren() {   # variant round
    local v=$1 r=$2 started q log keys0 keys1 rstats b0 b1 d0 d1 s0 s1 t1 w1 mq rd other out rc=0 left dlq sample
    q=$(queue_of "$v")
    log=$WORK/$v.r$r.log
    rcli flushdb >/dev/null
    keys0=$(rcli dbsize)
    prefill "$q"
    rcli config resetstat >/dev/null
    b0=$(cpu_ticks "$RABBIT_PID"); d0=$(cpu_ticks "$REDIS_PID"); s0=$(sys_busy)
    started=$(now_s)
    "$WARREN" run -c "$WORK/$v.yaml" >"$log" 2>&1 &
    WARREN_PID=$!
    run_child "$WORK/wait.out" "$PY" tests/bench/benchctl.py wait-warren --url "$WARREN_AMQP_URL" \
        --queue "$q" --log "$log" --count "$COUNT" --pid "$WARREN_PID" --started "$started" \
        --timeout $((60 + COUNT / 200)) || rc=$?
    out=$(cat "$WORK/wait.out")
    w1=$(cpu_ticks "$WARREN_PID")
    b1=$(cpu_ticks "$RABBIT_PID"); d1=$(cpu_ticks "$REDIS_PID"); s1=$(sys_busy); t1=$(now_s)
    mq=$(ticks_to_s "$b0" "$b1"); rd=$(ticks_to_s "$d0" "$d1")
    other=$(others_cores "$s0" "$s1" "$(sum_s "$(ticks_to_s 0 "$w1")" "$mq" "$rd")" "$started" "$t1")
    stop_pid "$WARREN_PID" 30
    WARREN_PID=
    keys1=$(rcli dbsize)
    # Redis's own account of the scripts: calls and server time per call
    rstats=$(rcli info commandstats | tr -d '\r' | awk -F'[:,=]' '
        $1 ~ /^cmdstat_(evalsha|eval)$/ { c += $3; u += $5 }
        END { printf "{\"calls\": %d, \"usec\": %d}", c, u }')
    sample=$(rcli --scan --pattern 'warren:idem:*' 2>/dev/null | head -1 || true)
    left=$("$PY" tests/bench/benchctl.py depth "$WARREN_AMQP_URL" "$q")
    dlq=$("$PY" tests/bench/benchctl.py depth "$WARREN_AMQP_URL" "$q.dlq")
    say "  $v: $out"
    say "  $v: CPU s: self $(ticks_to_s 0 "$w1"), rabbitmq $mq, redis $rd; other load on the machine: $other cores"
    say "  $v: redis keys before/after: $keys0/$keys1; scripts run by Redis: $rstats; after warren stopped: $left left in $q, $dlq in $q.dlq"
    if [ -n "$sample" ]; then
        say "  $v: a record: $sample = $(rcli hgetall "$sample" | paste -sd' ')"
    fi
    [ "$rc" -eq 0 ] || { say "  $v: run failed; last lines of $log:"; tail -5 "$log" | sed 's/^/    /'; }
    [ "$left" = 0 ] && [ "$dlq" = 0 ] || out=$(echo "$out" | sed 's/"ok": true/"ok": false/')
    record "$v" "$r" "$out" "consumer_cpu_s=$(ticks_to_s 0 "$w1")" \
        "broker_cpu_s=$mq" "redis_cpu_s=$rd" "other_cores=$other" \
        "redis_keys_before=$keys0" "redis_keys_after=$keys1" "left_after_stop=$left" "dlq=$dlq" \
        "redis_scripts=$rstats"
    [ "${BENCH_KEEP_LOGS:-0}" = 1 ] || [ "$rc" -ne 0 ] || rm -f "$log"
    rcli flushdb >/dev/null
}

# ------------------------------------------------------------------ rounds

read -r -a VLIST <<<"$VARIANTS"
NV=${#VLIST[@]}
T0=$SECONDS
for ((r = 1; r <= ROUNDS; r++)); do
    say "round $r of $ROUNDS"
    for ((i = 0; i < NV; i++)); do
        v=${VLIST[$(((i + r - 1) % NV))]}     # rotate the order from round to round
        case $v in
            baseline) run_baseline "$r" ;;
            *) run_warren "$v" "$r" ;;
        esac
    done
done

# ------------------------------------------------------------------ report

echo
say "results: $COUNT messages per run, median of $ROUNDS round(s), ~100-byte persistent JSON messages, prefetch $PREFETCH, ack every $BATCH ($((SECONDS - T0))s of runs)"
say "timing: baseline from basic.consume-ok to its last ack; warren from its first 'consuming' log line to its last 'message handled' line (ts, ms resolution)"
echo
"$PY" tests/bench/benchctl.py table "$RESULTS"
echo
"$PY" - "$RESULTS" "$COUNT" <<'PYEOF'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
for v in ("warren-c1", "warren-c2", "warren-store"):
    rs = [r for r in runs if r["variant"] == v]
    if rs:
        print("bench: redis keys (DBSIZE) in %s runs, before -> after: %s" % (
            v, ", ".join("%s -> %s" % (r.get("redis_keys_before"), r.get("redis_keys_after")) for r in rs)))
        st = [r.get("redis_scripts") for r in rs if isinstance(r.get("redis_scripts"), dict)]
        if st:
            print("bench: redis scripts in %s runs: %s" % (v, ", ".join(
                "%d calls, %.1f us/call, %.1f us/msg" % (x["calls"], x["usec"] / max(x["calls"], 1),
                                                         x["usec"] / int(sys.argv[2])) for x in st)))
PYEOF
FAILED=$(grep -c '"ok": false' "$RESULTS" || true)
[ "${FAILED:-0}" -eq 0 ] || { say "$FAILED run(s) failed: see $RESULTS"; exit 1; }
