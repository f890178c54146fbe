#!/usr/bin/env bash
# Private RabbitMQ node + Redis server for local runs and tests, loopback only.
#
#   stack.sh start|stop|status DIR
#   stack.sh start-rabbit|stop-rabbit|restart-rabbit DIR
#   stack.sh start-redis|stop-redis|restart-redis DIR
#   stack.sh alarm-on|alarm-off DIR   raise / clear RabbitMQ's memory alarm (the
#                         broker blocks every publisher: for fault tests)
#   stack.sh connections DIR   RabbitMQ's client connections as JSON (name, user,
#                         ssl, peer_cert_subject, client_properties): for the
#                         TLS tests
#
# All state (data, logs, pid files, config) lives under DIR; restarting on the
# same DIR keeps the data. No systemd; must run as root (RabbitMQ runs as the
# rabbitmq user, Redis as the redis user).
#
# Environment (ports):
#   WR_AMQP_PORT          AMQP listener           (default 5672)
#   WR_RABBIT_DIST_PORT   Erlang distribution      (default WR_AMQP_PORT+20000)
#   WR_RABBIT_CTL_PORT    first of 11 ports used by rabbitmqctl's own Erlang
#                         node                     (default WR_RABBIT_DIST_PORT+100)
#   WR_REDIS_PORT         Redis                    (default 6379)
#   WR_AMQPS_PORT         optional: RabbitMQ also listens for AMQP over TLS
#                         on this port (none when unset or empty)
#   WR_RABBIT_BUSY_WAIT   how long Erlang's schedulers spin before they sleep:
#                         none (default: the broker shares the machine with
#                         the consumer and Redis) or default (Erlang's own)
# The node name is warren-<WR_AMQP_PORT>@localhost, so stacks on different
# ports (demo 5672/6379, tests 17672/17379) can run side by side.
#
# With WR_AMQPS_PORT, each fresh start of RabbitMQ makes a throwaway test PKI
# with openssl in DIR/tls: ca.pem (the test CA), server.pem/.key (the
# broker's, for DNS name "localhost" only, so connecting to 127.0.0.1 must
# fail the name check), client.pem/.key (a client certificate of the test
# CA), other-ca.pem and other-client.pem/.key (a second CA nobody trusts).
# The broker asks for a client certificate and checks it against ca.pem, but
# does not require one.
#
# start writes DIR/env (KEY=VALUE lines, sourceable):
#   WARREN_AMQP_URL=amqp://guest:guest@127.0.0.1:<port>/
#   WARREN_REDIS_URL=redis://127.0.0.1:<port>/0
# and with WR_AMQPS_PORT:
#   WARREN_AMQPS_URL=amqps://guest:guest@localhost:<port>/
#   WARREN_TLS_DIR=DIR/tls
#
# Exit status: 0 ok; 1 error. status: 0 when both servers run and answer,
# 3 otherwise. The shared epmd daemon (127.0.0.1:4369) is never stopped.
set -euo pipefail

PY=/usr/bin/python3
RABBIT_BIN=/usr/lib/rabbitmq/bin
RABBIT_HOME=/var/lib/rabbitmq          # HOME of the rabbitmq user: Erlang cookie
RABBIT_START_TIMEOUT=60
RABBIT_STOP_TIMEOUT=60
REDIS_START_TIMEOUT=10
REDIS_STOP_TIMEOUT=15
LOOPBACK_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1}'
# Erlang's schedulers spin for a while when they run out of work before they
# sleep. On a machine the broker shares with the consumer and Redis (this
# stack is for local runs and tests) that spinning takes CPU from them:
# WR_RABBIT_BUSY_WAIT=none (the default here) turns it off; "default" keeps
# Erlang's own setting.
case ${WR_RABBIT_BUSY_WAIT:-none} in
    default) BUSY_WAIT_ERL_ARGS='' ;;
    none | very_short | short | medium | long | very_long)
        BUSY_WAIT_ERL_ARGS="+sbwt ${WR_RABBIT_BUSY_WAIT:-none} +sbwtdcpu ${WR_RABBIT_BUSY_WAIT:-none} +sbwtdio ${WR_RABBIT_BUSY_WAIT:-none}" ;;
    *) echo "stack: error: WR_RABBIT_BUSY_WAIT must be default, none, very_short, short, medium, long or very_long" >&2; exit 1 ;;
esac

say() { echo "stack: $*"; }
die() { echo "stack: error: $*" >&2; exit 1; }

usage() {
    cat >&2 <<'EOF'
usage: stack.sh COMMAND DIR
  start | stop | status            both servers
  start-rabbit | stop-rabbit | restart-rabbit
  start-redis  | stop-redis  | restart-redis
  alarm-on | alarm-off             RabbitMQ's memory alarm (blocks publishers)
  connections                      RabbitMQ's client connections as JSON
env: WR_AMQP_PORT (5672) WR_RABBIT_DIST_PORT (AMQP+20000)
     WR_RABBIT_CTL_PORT (DIST+100) WR_REDIS_PORT (6379)
     WR_AMQPS_PORT (none: no TLS listener)
EOF
    exit 2
}

[ $# -eq 2 ] || usage
CMD=$1
[ -n "$2" ] || usage
[ "$(id -u)" -eq 0 ] || die "must run as root"

check_port() {   # name value
    case $2 in
        ''|*[!0-9]*) die "$1=$2 is not a port number" ;;
    esac
    [ "$2" -ge 1 ] && [ "$2" -le 65535 ] || die "$1=$2 is out of range 1-65535"
}

AMQP_PORT=${WR_AMQP_PORT:-5672};                          check_port WR_AMQP_PORT "$AMQP_PORT"
DIST_PORT=${WR_RABBIT_DIST_PORT:-$((AMQP_PORT + 20000))}; check_port WR_RABBIT_DIST_PORT "$DIST_PORT"
CTL_PORT=${WR_RABBIT_CTL_PORT:-$((DIST_PORT + 100))};     check_port WR_RABBIT_CTL_PORT "$CTL_PORT"
check_port "WR_RABBIT_CTL_PORT+10" "$((CTL_PORT + 10))"
REDIS_PORT=${WR_REDIS_PORT:-6379};                        check_port WR_REDIS_PORT "$REDIS_PORT"
AMQPS_PORT=${WR_AMQPS_PORT:-}
[ -z "$AMQPS_PORT" ] || check_port WR_AMQPS_PORT "$AMQPS_PORT"
if [ "$AMQP_PORT" = "$DIST_PORT" ] || [ "$AMQP_PORT" = "$REDIS_PORT" ] || [ "$DIST_PORT" = "$REDIS_PORT" ]; then
    die "ports must differ: amqp=$AMQP_PORT dist=$DIST_PORT redis=$REDIS_PORT"
fi
case " $AMQP_PORT $DIST_PORT $REDIS_PORT " in
    *" ${AMQPS_PORT:-none} "*) die "WR_AMQPS_PORT=$AMQPS_PORT is already used by another server" ;;
esac
for p in "$AMQP_PORT" "$DIST_PORT" "$REDIS_PORT"; do
    if [ "$p" -ge "$CTL_PORT" ] && [ "$p" -le $((CTL_PORT + 10)) ]; then
        die "port $p falls inside the rabbitmqctl range $CTL_PORT-$((CTL_PORT + 10)); set WR_RABBIT_CTL_PORT"
    fi
done

NODE="warren-${AMQP_PORT}@localhost"
DIR=$(realpath -m -- "$2")

R=$DIR/rabbit
R_PID=$R/rabbit.pid
R_LOG=$R/log/$NODE.log
R_OUT=$R/log/startup.out
R_DUMP=$R/log/erl_crash.dump
T=$DIR/tls
D=$DIR/redis
D_PID=$D/redis.pid
D_LOG=$D/redis.log
D_CONF=$D/redis.conf

# Environment for every rabbitmq-server / rabbitmqctl call: nothing inherited
# from the caller except what is listed here.
RABBIT_ENV=(
    PATH=/usr/sbin:/usr/bin:/sbin:/bin
    LANG=C.UTF-8 LC_ALL=C.UTF-8
    HOME="$RABBIT_HOME"
    ERL_EPMD_ADDRESS=127.0.0.1
    RABBITMQ_NODENAME="$NODE"
    RABBITMQ_USE_LONGNAME=false
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    RABBITMQ_NODE_PORT="$AMQP_PORT"
    RABBITMQ_DIST_PORT="$DIST_PORT"
    RABBITMQ_MNESIA_BASE="$R/mnesia"
    RABBITMQ_LOG_BASE="$R/log"
    RABBITMQ_CONFIG_FILE="$R/rabbitmq"
    RABBITMQ_ADVANCED_CONFIG_FILE="$R/advanced.config"
    RABBITMQ_CONF_ENV_FILE="$R/rabbitmq-env.conf"
    RABBITMQ_ENABLED_PLUGINS_FILE="$R/enabled_plugins"
    RABBITMQ_PID_FILE="$R_PID"
    ERL_CRASH_DUMP="$R/log/erl_crash.dump"
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="$LOOPBACK_ERL_ARGS $BUSY_WAIT_ERL_ARGS"
    RABBITMQ_CTL_ERL_ARGS="$LOOPBACK_ERL_ARGS"
    RABBITMQ_CTL_DIST_PORT_MIN="$CTL_PORT"
    RABBITMQ_CTL_DIST_PORT_MAX="$((CTL_PORT + 10))"
)

# Run a command as rabbitmq with RABBIT_ENV; $CMD_TIMEOUT seconds (0 = none).
# fd 9 (our lock) is closed so daemons do not inherit it.
as_rabbitmq() {
    (cd / && timeout -k 5 "${CMD_TIMEOUT:-0}" \
        runuser -u rabbitmq -- env -i "${RABBIT_ENV[@]}" "$@") 9>&-
}
rabbitmqctl() { as_rabbitmq "$RABBIT_BIN/rabbitmqctl" -n "$NODE" "$@"; }

# ---------------------------------------------------------------- helpers

# A zombie counts as gone (a daemon's exit is reaped by init, sometimes late).
pid_alive() {
    [ -n "$1" ] && kill -0 "$1" 2>/dev/null || return 1
    local state
    state=$(awk '/^State:/ {print $2}' "/proc/$1/status" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}

read_pid() {     # pidfile -> pid on stdout ("" when absent/garbage)
    local p=""
    [ -f "$1" ] && p=$(head -c 32 "$1" 2>/dev/null | tr -dc '0-9')
    echo "$p"
}

is_our_rabbit() {   # pid: a beam started for this node name and this DIR
    local pid=$1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = beam.smp ] || return 1
    tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qxF "RABBITMQ_NODENAME=$NODE" || return 1
    tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qxF "RABBITMQ_MNESIA_BASE=$R/mnesia"
}

is_our_redis() {    # pid: a redis-server for this port working in DIR/redis
    local pid=$1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = redis-server ] || return 1
    # redis chdirs to its `dir` and retitles itself "redis-server 127.0.0.1:PORT"
    [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$D" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "127.0.0.1:$REDIS_PORT"
}

# Prints the pid of our running server, or nothing; removes a stale pid file.
live_pid() {        # pidfile checker label [keep]
    local pidfile=$1 checker=$2 label=$3 keep=${4:-} pid
    pid=$(read_pid "$pidfile")
    if [ -n "$pid" ] && pid_alive "$pid" && "$checker" "$pid"; then
        echo "$pid"
        return 0
    fi
    if [ -e "$pidfile" ] && [ -z "$keep" ]; then
        echo "stack: $label: removing stale pid file $pidfile${pid:+ (pid $pid)}" >&2
        rm -f -- "$pidfile"
    fi
}

port_listening() { [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; }

port_owner() {      # best-effort description of who listens on a port
    local info
    info=$(ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'users:(([^)]*))' | head -1 || true)
    echo "${info:-unknown process}"
}

require_free() {    # port what
    if port_listening "$1"; then
        die "port $1 ($2) is already in use by another process ($(port_owner "$1")); pick other ports via WR_AMQP_PORT/WR_RABBIT_DIST_PORT/WR_REDIS_PORT"
    fi
}

wait_gone() {       # pid seconds -> 0 when gone
    local pid=$1 deadline=$((SECONDS + $2))
    while pid_alive "$pid"; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

kill_escalate() {   # pid label grace -- TERM, then KILL
    local pid=$1 label=$2 grace=$3
    pid_alive "$pid" || return 0
    say "$label: sending TERM to pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    wait_gone "$pid" "$grace" && return 0
    say "$label: pid $pid ignored TERM for ${grace}s, sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 10 || die "$label: pid $pid survived KILL"
}

# Log tails show only what was written since mark_logs (the launch).
declare -A LOG_OFF=()
mark_logs() {       # file...
    local f
    for f in "$@"; do LOG_OFF[$f]=$(stat -c %s -- "$f" 2>/dev/null || echo 0); done
}

show_log_tail() {   # file...
    local f off size
    for f in "$@"; do
        [ -s "$f" ] || continue
        off=${LOG_OFF[$f]:-0}
        size=$(stat -c %s -- "$f")
        [ "$size" -ge "$off" ] || off=0          # rotated meanwhile
        [ "$size" -gt "$off" ] || continue
        echo "stack: ---- last lines of $f ----" >&2
        tail -c +$((off + 1)) -- "$f" | tail -n 30 >&2
    done
}

rabbit_failure_details() {
    show_log_tail "$R_OUT" "$R_LOG"
    # Boot errors before logging is set up only reach the crash dump
    # (-detached sends the VM's stdout to /dev/null).
    if [ -s "$R_DUMP" ]; then
        echo "stack: Erlang VM crashed, see $R_DUMP:" >&2
        grep -m1 '^Slogan:' "$R_DUMP" | cut -c1-600 >&2 || true
    fi
}

# AMQP readiness: a real login as guest through pika. Exit 0 ready, 1 timeout,
# 2 the server process died, 3 pika missing.
amqp_wait() {       # timeout_seconds (0 = single check)
    "$PY" - "$AMQP_PORT" "$R_PID" "$1" "$NODE" "$R/mnesia" <<'PYEOF'
import logging, os, sys, time
logging.disable(logging.CRITICAL)
try:
    import pika
except ImportError:
    sys.stderr.write("stack: error: /usr/bin/python3 cannot import pika (run deploy/install-deps.sh)\n")
    sys.exit(3)
port, pidfile, timeout = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
want = {("RABBITMQ_NODENAME=" + sys.argv[4]).encode(),
        ("RABBITMQ_MNESIA_BASE=" + sys.argv[5]).encode()}
params = pika.ConnectionParameters(
    host="127.0.0.1", port=port, virtual_host="/",
    credentials=pika.PlainCredentials("guest", "guest"),
    connection_attempts=1, retry_delay=0, socket_timeout=2, stack_timeout=5)

def pid_from_file():
    try:
        with open(pidfile) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None

def find_beam():      # our node's VM before it has written its pid file
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/comm" % d) as f:
                if f.read().strip() != "beam.smp":
                    continue
            with open("/proc/%s/environ" % d, "rb") as f:
                if want <= set(f.read().split(b"\0")):
                    return int(d)
        except OSError:
            pass
    return None

def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False

t0 = time.monotonic()
deadline = t0 + timeout
seen_pidfile = False
while True:
    try:
        pika.BlockingConnection(params).close()
        sys.exit(0)
    except Exception:
        pass
    if time.monotonic() >= deadline:
        sys.exit(1)
    pid = pid_from_file()
    if pid is not None:
        seen_pidfile = True
    elif seen_pidfile:            # the node removes its pid file when it stops
        sys.exit(2)
    else:
        pid = find_beam()
    if pid is None:
        if time.monotonic() - t0 > 5:   # -detached spawns the VM well within this
            sys.exit(2)
    elif not alive(pid):
        sys.exit(2)
    time.sleep(0.5)
PYEOF
}

redis_ping() { [ "$(timeout 3 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; }

ensure_dir() {
    # created world-enterable whatever the caller's umask: the servers run as
    # the rabbitmq and redis users and must reach their data below DIR
    (umask 022 && mkdir -p -- "$DIR")
    [ -d "$DIR" ] || die "$DIR is not a directory"
    runuser -u rabbitmq -- test -x "$DIR" ||
        die "$DIR cannot be entered by the rabbitmq user (is a parent directory private, like /root?); use a directory under /var/tmp"
}

write_env() {
    local tmp="$DIR/env.tmp.$$"
    printf 'WARREN_AMQP_URL=amqp://guest:guest@127.0.0.1:%s/\nWARREN_REDIS_URL=redis://127.0.0.1:%s/0\n' \
        "$AMQP_PORT" "$REDIS_PORT" >"$tmp"
    if [ -n "$AMQPS_PORT" ]; then
        printf 'WARREN_AMQPS_URL=amqps://guest:guest@localhost:%s/\nWARREN_TLS_DIR=%s\n' \
            "$AMQPS_PORT" "$T" >>"$tmp"
    fi
    chmod 644 "$tmp"
    mv -f -- "$tmp" "$DIR/env"
    say "wrote $DIR/env:"
    sed 's/^/  /' "$DIR/env"
}

# Serialise stack.sh invocations on the same DIR.
take_lock() {
    ensure_dir
    exec 9>"$DIR/.stack.lock"
    flock -w 180 9 || die "another stack.sh holds $DIR/.stack.lock"
}

# ---------------------------------------------------------------- test PKI

# A certificate NAME.pem/.key for subject CN, signed by CA (ca or other-ca),
# with the extensions in EXT (one per line).
tls_cert() {        # name cn ca ext
    local name=$1 cn=$2 ca=$3 ext=$4
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$cn" \
        -keyout "$T/$name.key" -out "$T/$name.csr" 2>/dev/null
    printf '%s\n' "$ext" >"$T/$name.ext"
    openssl x509 -req -in "$T/$name.csr" -CA "$T/$ca.pem" -CAkey "$T/$ca.key" \
        -CAcreateserial -days 3650 -out "$T/$name.pem" -extfile "$T/$name.ext" 2>/dev/null
    rm -f -- "$T/$name.csr" "$T/$name.ext"
}

# The throwaway PKI of the TLS listener (see the top of this file), made anew.
make_test_pki() {
    local ca
    rm -rf -- "$T"
    (umask 022 && mkdir -p -- "$T")
    for ca in ca other-ca; do
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
            -subj "/CN=warren $ca for tests" -keyout "$T/$ca.key" -out "$T/$ca.pem" 2>/dev/null ||
            die "openssl cannot make the test CA in $T"
    done
    tls_cert server localhost ca \
        "$(printf 'subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE')"
    tls_cert client warren-test-client ca \
        "$(printf 'extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE')"
    tls_cert other-client warren-test-other-client other-ca \
        "$(printf 'extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE')"
    [ -s "$T/server.pem" ] && [ -s "$T/client.pem" ] && [ -s "$T/other-client.pem" ] ||
        die "openssl cannot make the test certificates in $T"
    chgrp rabbitmq -- "$T/server.key" && chmod 640 -- "$T/server.key"
    say "rabbitmq: test CA and certificates made in $T"
}

# ---------------------------------------------------------------- rabbitmq

rabbit_write_config() {
    mkdir -p -- "$R/mnesia" "$R/log"
    cat >"$R/rabbitmq.conf" <<EOF
# generated by stack.sh on each start; edits are lost
listeners.tcp.default = 127.0.0.1:$AMQP_PORT
loopback_users.guest = true
log.console = false
log.file.level = info
log.file.rotation.size = 10485760
log.file.rotation.count = 3
EOF
    if [ -n "$AMQPS_PORT" ]; then
        make_test_pki
        cat >>"$R/rabbitmq.conf" <<EOF
listeners.ssl.default = 127.0.0.1:$AMQPS_PORT
ssl_options.cacertfile = $T/ca.pem
ssl_options.certfile = $T/server.pem
ssl_options.keyfile = $T/server.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = false
EOF
    fi
    # Plugins: rabbitmq_consistent_hash_exchange (a subscription's `partitions`
    # route through an x-consistent-hash exchange), added to a file kept from
    # an older start. Kept across restarts, so `rabbitmq-plugins enable`
    # against this node persists.
    [ -f "$R/enabled_plugins" ] || echo '[].' >"$R/enabled_plugins"
    add_hash_plugin_to_file || true
    chown -R rabbitmq:rabbitmq -- "$R"
    chmod 750 -- "$R"
    runuser -u rabbitmq -- test -w "$R/mnesia" ||
        die "the rabbitmq user cannot reach $R (is a parent of $DIR closed to other users?)"
}

# enabled_plugins is an Erlang list: [a,b]. Add the consistent-hash exchange
# plugin unless it is there. Returns 0 when the file changed.
add_hash_plugin_to_file() {
    local f="$R/enabled_plugins"
    grep -q rabbitmq_consistent_hash_exchange "$f" 2>/dev/null && return 1
    if grep -q '^\[ *\]\.' "$f"; then
        echo '[rabbitmq_consistent_hash_exchange].' >"$f"
    else
        sed -i 's/^\[/[rabbitmq_consistent_hash_exchange,/' "$f"
        chown rabbitmq:rabbitmq "$f"
    fi
    return 0
}

start_rabbit() {
    local pid rc t0=$SECONDS
    pid=$(live_pid "$R_PID" is_our_rabbit rabbitmq)
    if [ -n "$pid" ]; then
        if amqp_wait 0; then
            say "rabbitmq: already running (pid $pid, node $NODE, amqp 127.0.0.1:$AMQP_PORT)"
            if add_hash_plugin_to_file; then
                # a node started before partitions existed: enable it live (no restart)
                say "rabbitmq: enabling rabbitmq_consistent_hash_exchange"
                CMD_TIMEOUT=60 as_rabbitmq "$RABBIT_BIN/rabbitmq-plugins" -n "$NODE" enable \
                    rabbitmq_consistent_hash_exchange >/dev/null ||
                    die "rabbitmq: rabbitmq-plugins enable rabbitmq_consistent_hash_exchange failed"
            fi
            return 0
        fi
        say "rabbitmq: pid $pid is up but not answering yet; waiting"
    else
        require_free "$AMQP_PORT" "RabbitMQ AMQP"
        require_free "$DIST_PORT" "RabbitMQ Erlang distribution"
        [ -z "$AMQPS_PORT" ] || require_free "$AMQPS_PORT" "RabbitMQ AMQP over TLS"
        rabbit_write_config
        say "rabbitmq: starting node $NODE (amqp 127.0.0.1:$AMQP_PORT, dist 127.0.0.1:$DIST_PORT, data $R)"
        : >"$R_OUT"; chown rabbitmq:rabbitmq "$R_OUT"
        [ ! -e "$R_DUMP" ] || mv -f -- "$R_DUMP" "$R_DUMP.old"
        mark_logs "$R_OUT" "$R_LOG"
        if ! as_rabbitmq "$RABBIT_BIN/rabbitmq-server" -detached >>"$R_OUT" 2>&1; then
            rabbit_failure_details
            die "rabbitmq: rabbitmq-server -detached failed"
        fi
    fi
    rc=0; amqp_wait "$RABBIT_START_TIMEOUT" || rc=$?
    if [ "$rc" -eq 0 ] && [ -n "$AMQPS_PORT" ]; then
        # the TLS listener starts with the AMQP one; give it a moment all the same
        local until_tls=$((SECONDS + 10))
        until port_listening "$AMQPS_PORT"; do
            if [ "$SECONDS" -ge "$until_tls" ]; then
                rabbit_failure_details
                die "rabbitmq: no TLS listener on 127.0.0.1:$AMQPS_PORT (see the log above)"
            fi
            sleep 0.2
        done
    fi
    case $rc in
        0) say "rabbitmq: ready in $((SECONDS - t0))s (pid $(read_pid "$R_PID"))${AMQPS_PORT:+, TLS on 127.0.0.1:$AMQPS_PORT}" ;;
        2) rabbit_failure_details; die "rabbitmq: node $NODE exited during startup" ;;
        3) exit 1 ;;
        *) rabbit_failure_details
           pid=$(read_pid "$R_PID")
           die "rabbitmq: not accepting AMQP on 127.0.0.1:$AMQP_PORT after ${RABBIT_START_TIMEOUT}s${pid:+ (pid $pid left running; 'stack.sh stop $DIR' stops it)}" ;;
    esac
}

stop_rabbit() {
    local pid t0=$SECONDS
    pid=$(live_pid "$R_PID" is_our_rabbit rabbitmq)
    if [ -z "$pid" ]; then
        say "rabbitmq: not running"
        return 0
    fi
    say "rabbitmq: stopping node $NODE (pid $pid)"
    # `stop PIDFILE` returns once that OS process has exited.
    if ! CMD_TIMEOUT=$RABBIT_STOP_TIMEOUT rabbitmqctl stop "$R_PID" >/dev/null 2>&1; then
        pid_alive "$pid" && say "rabbitmq: rabbitmqctl stop failed or timed out"
    fi
    if ! wait_gone "$pid" 5; then
        kill_escalate "$pid" rabbitmq 15
    fi
    rm -f -- "$R_PID"
    say "rabbitmq: stopped in $((SECONDS - t0))s"
}

status_rabbit() {
    local pid
    pid=$(live_pid "$R_PID" is_our_rabbit rabbitmq keep)
    if [ -z "$pid" ]; then
        say "rabbitmq: stopped (node $NODE, amqp port $AMQP_PORT)"
        return 1
    fi
    if amqp_wait 0; then
        say "rabbitmq: running, pid $pid, node $NODE, amqp 127.0.0.1:$AMQP_PORT"
        return 0
    fi
    say "rabbitmq: pid $pid alive but AMQP 127.0.0.1:$AMQP_PORT not answering"
    return 1
}

# ---------------------------------------------------------------- redis

redis_write_config() {
    mkdir -p -- "$D"
    cat >"$D_CONF" <<EOF
# generated by stack.sh on each start; edits are lost
bind 127.0.0.1
protected-mode yes
port $REDIS_PORT
dir $D
daemonize yes
supervised no
pidfile $D_PID
logfile $D_LOG
loglevel notice
always-show-logo no
save ""
appendonly yes
appendfsync everysec
appendfilename "appendonly.aof"
appenddirname "appendonlydir"
EOF
    chown -R redis:redis -- "$D"
    chmod 750 -- "$D"
    runuser -u redis -- test -w "$D" ||
        die "the redis user cannot reach $D (is a parent of $DIR closed to other users?)"
}

start_redis() {
    local pid deadline t0=$SECONDS
    pid=$(live_pid "$D_PID" is_our_redis redis)
    if [ -n "$pid" ]; then
        if redis_ping; then
            say "redis: already running (pid $pid, 127.0.0.1:$REDIS_PORT)"
            return 0
        fi
        say "redis: pid $pid is up but not answering yet; waiting"
    else
        require_free "$REDIS_PORT" "Redis"
        redis_write_config
        say "redis: starting on 127.0.0.1:$REDIS_PORT (data $D)"
        mark_logs "$D_LOG.startup" "$D_LOG"
        if ! (cd / && runuser -u redis -- redis-server "$D_CONF") >>"$D_LOG.startup" 2>&1 9>&-; then
            show_log_tail "$D_LOG.startup" "$D_LOG"
            die "redis: redis-server failed to start"
        fi
    fi
    deadline=$((SECONDS + REDIS_START_TIMEOUT))
    until redis_ping; do
        pid=$(read_pid "$D_PID")
        if [ "$SECONDS" -ge "$deadline" ]; then
            show_log_tail "$D_LOG.startup" "$D_LOG"
            die "redis: no PONG from 127.0.0.1:$REDIS_PORT after ${REDIS_START_TIMEOUT}s"
        fi
        if [ -n "$pid" ] && ! pid_alive "$pid"; then
            show_log_tail "$D_LOG.startup" "$D_LOG"
            die "redis: server exited during startup"
        fi
        sleep 0.2
    done
    say "redis: ready in $((SECONDS - t0))s (pid $(read_pid "$D_PID"))"
}

stop_redis() {
    local pid t0=$SECONDS
    pid=$(live_pid "$D_PID" is_our_redis redis)
    if [ -z "$pid" ]; then
        say "redis: not running"
        return 0
    fi
    say "redis: stopping (pid $pid)"
    # SHUTDOWN flushes and fsyncs the AOF; NOSAVE skips the (disabled) RDB.
    timeout 10 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    if ! wait_gone "$pid" "$REDIS_STOP_TIMEOUT"; then
        kill_escalate "$pid" redis 10
    fi
    rm -f -- "$D_PID"
    say "redis: stopped in $((SECONDS - t0))s"
}

status_redis() {
    local pid
    pid=$(live_pid "$D_PID" is_our_redis redis keep)
    if [ -z "$pid" ]; then
        say "redis: stopped (port $REDIS_PORT)"
        return 1
    fi
    if redis_ping; then
        say "redis: running, pid $pid, 127.0.0.1:$REDIS_PORT"
        return 0
    fi
    say "redis: pid $pid alive but 127.0.0.1:$REDIS_PORT not answering"
    return 1
}

# Before starting anything, make sure every server that is not already ours
# can get its ports, so a conflict does not leave a half-started stack.
preflight() {       # rabbit|redis...
    local what
    for what in "$@"; do
        case $what in
            rabbit)
                if [ -z "$(live_pid "$R_PID" is_our_rabbit rabbitmq)" ]; then
                    require_free "$AMQP_PORT" "RabbitMQ AMQP"
                    require_free "$DIST_PORT" "RabbitMQ Erlang distribution"
                    [ -z "$AMQPS_PORT" ] || require_free "$AMQPS_PORT" "RabbitMQ AMQP over TLS"
                fi ;;
            redis)
                if [ -z "$(live_pid "$D_PID" is_our_redis redis)" ]; then
                    require_free "$REDIS_PORT" "Redis"
                fi ;;
        esac
    done
}

# ---------------------------------------------------------------- main

case $CMD in
    stop|stop-rabbit|stop-redis)
        if [ ! -d "$DIR" ]; then say "no stack directory $DIR: nothing to stop"; exit 0; fi ;;
esac

case $CMD in
    start)          take_lock; preflight rabbit redis; start_redis; start_rabbit; write_env ;;
    stop)           take_lock; stop_rabbit; stop_redis ;;
    status)         [ -d "$DIR" ] || { say "no stack directory $DIR"; exit 3; }
                    rc=0; status_rabbit || rc=3; status_redis || rc=3
                    [ -f "$DIR/env" ] && say "env file: $DIR/env"
                    exit "$rc" ;;
    start-rabbit)   take_lock; start_rabbit; write_env ;;
    stop-rabbit)    take_lock; stop_rabbit ;;
    restart-rabbit) take_lock; stop_rabbit; start_rabbit; write_env ;;
    start-redis)    take_lock; start_redis; write_env ;;
    stop-redis)     take_lock; stop_redis ;;
    restart-redis)  take_lock; stop_redis; start_redis; write_env ;;
    # a watermark of 0 sets the memory alarm off at once; 0.4 is RabbitMQ's default
    alarm-on)       rabbitmqctl set_vm_memory_high_watermark 0 ;;
    alarm-off)      rabbitmqctl set_vm_memory_high_watermark 0.4 ;;
    connections)    CMD_TIMEOUT=30 rabbitmqctl list_connections name user ssl peer_cert_subject \
                        client_properties --formatter json ;;
    *)              usage ;;
esac
