#!/bin/sh
# A local cluster on loopback: one redis-server (AOF on), N gateway nodes and nginx as the
# load balancer in front of them, all run from target/cluster/ and stopped by PID.
#
#   deploy/cluster.sh up [N]     start (default N=3); prints the URLs and how to use them
#   deploy/cluster.sh down       stop exactly what `up` started (the PIDs in its pid file)
#   deploy/cluster.sh status     what is running
#
# Ports: nginx 127.0.0.1:8080 (LB_PORT), redis 6390 (REDIS_PORT), node i on NODE_PORT+i-1
# (8081..) with metrics on METRICS_PORT+i-1 (9091..). Binaries: BIN_DIR (target/release,
# built by `make cluster`); run directory CLUSTER_DIR (target/cluster).
#
# `up` refuses to start when any of its ports is taken, and reports the cluster up only
# when every process it started is alive and answers on its own port: Redis reports its own
# PID, each node's /healthz the node id that node logged, and nginx proxies to them. On any
# failure it stops what it started and exits 1.
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
run=${CLUSTER_DIR:-$top/target/cluster}
bin=${BIN_DIR:-$top/target/release}
lb_port=${LB_PORT:-8080}
redis_port=${REDIS_PORT:-6390}
node_port=${NODE_PORT:-8081}
metrics_port=${METRICS_PORT:-9091}
secret=${GATEWAY_JWT_SECRET:-dev-only-secret-change-me-0123456789}
# Seconds each process gets to come up.
start_seconds=20

die() { echo "cluster.sh: $*" >&2; exit 1; }

# fail MESSAGE: stop what was started, then exit 1 with MESSAGE.
fail() {
    echo "cluster.sh: $*" >&2
    down >/dev/null 2>&1 || true
    echo "cluster.sh: stopped what it had started; logs in $run" >&2
    exit 1
}

# port_taken PORT: something listens on PORT (any address).
port_taken() {
    [ -n "$(ss -Hltn "( sport = :$1 )" 2>/dev/null)" ]
}

# ours PID PROGRAM: PID is still a process running PROGRAM (not a reused PID).
ours() {
    tr '\0' ' ' 2>/dev/null < "/proc/$1/cmdline" | grep -q "$2"
}

program_of() {
    case $1 in
        node*) echo sse-gateway ;;
        redis) echo redis-server ;;
        nginx) echo nginx ;;
    esac
}

# started NAME: the PID `up` recorded for NAME.
started() {
    sed -n "s/^$1 //p" "$run/pids"
}

# alive NAME: the process `up` started as NAME is still running (a zombie is not).
alive() {
    alive_pid=$(started "$1")
    [ -n "$alive_pid" ] && ours "$alive_pid" "$(program_of "$1")"
}

# wait_for SECONDS NAME COMMAND...: until COMMAND succeeds while NAME's process lives.
# (POSIX sh has no local variables: the helpers' own are prefixed.)
wait_for() {
    wait_ticks=$(($1 * 10)) wait_name=$2
    shift 2
    wait_tick=0
    while [ $wait_tick -lt $wait_ticks ]; do
        alive "$wait_name" || return 1
        "$@" && return 0
        sleep 0.1
        wait_tick=$((wait_tick + 1))
    done
    return 1
}

# redis_is_ours: the Redis on redis_port is the one `up` started (INFO reports its PID).
redis_is_ours() {
    redis-cli -p "$redis_port" info server 2>/dev/null | tr -d '\r' |
        grep -qx "process_id:$(started redis)"
}

# logged_node NAME: the node id NAME logged when it started serving.
logged_node() {
    sed -n 's/.*"message":"serving".*"node":"\([0-9a-f]*\)".*/\1/p' "$run/$1.log" | head -n 1
}

# node_answers NAME PORT: /healthz on PORT reports NAME's own node id.
node_answers() {
    answers_node=$(logged_node "$1")
    [ -n "$answers_node" ] || return 1
    curl -s --max-time 2 "http://127.0.0.1:$2/healthz" 2>/dev/null | grep -q "\"node\":\"$answers_node\"" &&
        [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$2/readyz")" = 200 ]
}

# lb_answers: nginx on lb_port proxies /healthz to one of the nodes started here.
lb_answers() {
    lb_body=$(curl -s --max-time 2 "http://127.0.0.1:$lb_port/healthz" 2>/dev/null) || return 1
    for lb_name in $names; do
        lb_node=$(logged_node "$lb_name")
        case $lb_body in *"\"node\":\"$lb_node\""*) return 0 ;; esac
    done
    return 1
}

up() {
    n=${1:-3}
    case $n in '' | *[!0-9]*) die "not a number of nodes: $n" ;; esac
    [ "$n" -ge 1 ] || die "at least one node"
    [ -x "$bin/sse-gateway" ] || die "no $bin/sse-gateway: run 'make cluster' (it builds first)"
    command -v redis-server >/dev/null || die "redis-server is missing (apt-get install redis-server)"
    command -v redis-cli >/dev/null || die "redis-cli is missing (apt-get install redis-tools)"
    command -v nginx >/dev/null || die "nginx is missing (apt-get install nginx)"
    command -v curl >/dev/null || die "curl is missing (apt-get install curl)"
    command -v ss >/dev/null || die "ss is missing (apt-get install iproute2)"
    [ ! -e "$run/pids" ] || die "already running (see $run); 'make cluster-down' first"

    # Every port first: nothing starts unless all are free.
    ports="$lb_port:nginx $redis_port:redis"
    i=1
    while [ $i -le "$n" ]; do
        ports="$ports $((node_port + i - 1)):node$i $((metrics_port + i - 1)):node$i-metrics"
        i=$((i + 1))
    done
    taken=
    for entry in $ports; do
        if port_taken "${entry%%:*}"; then
            taken="$taken 127.0.0.1:${entry%%:*} (for ${entry#*:})"
        fi
    done
    [ -z "$taken" ] || die "ports already in use:$taken. Stop what listens there (make cluster-down, or the 'make run' gateway), or choose others: LB_PORT, REDIS_PORT, NODE_PORT, METRICS_PORT"

    mkdir -p "$run/redis"
    : > "$run/pids"
    redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$run/redis" --appendonly yes \
        --save '' --daemonize no > "$run/redis.log" 2>&1 &
    echo "redis $!" >> "$run/pids"
    wait_for "$start_seconds" redis redis_is_ours ||
        fail "redis did not come up on :$redis_port (see $run/redis.log)"

    names=
    node_ports=
    i=1
    while [ $i -le "$n" ]; do
        port=$((node_port + i - 1))
        GATEWAY_JWT_SECRET=$secret "$bin/sse-gateway" --listen "127.0.0.1:$port" \
            --metrics-listen "127.0.0.1:$((metrics_port + i - 1))" \
            --redis-url "redis://127.0.0.1:$redis_port" --log-format json > "$run/node$i.log" 2>&1 &
        echo "node$i $!" >> "$run/pids"
        names="$names node$i"
        node_ports="$node_ports $port"
        i=$((i + 1))
    done
    # shellcheck disable=SC2086 # the ports are separate arguments
    "$top/deploy/nginx/render.sh" --listen "127.0.0.1:$lb_port" --run-dir "$run/nginx" \
        "$run/nginx/nginx.conf" $node_ports
    nginx -p "$run/nginx" -c "$run/nginx/nginx.conf" -e "$run/nginx/error.log" \
        > "$run/nginx.log" 2>&1 &
    echo "nginx $!" >> "$run/pids"

    i=1
    for name in $names; do
        port=$((node_port + i - 1))
        wait_for "$start_seconds" "$name" node_answers "$name" "$port" ||
            fail "$name is not serving on :$port (see $run/$name.log)"
        i=$((i + 1))
    done
    wait_for "$start_seconds" nginx lb_answers ||
        fail "nginx on :$lb_port does not reach the nodes (see $run/nginx.log and $run/nginx/error.log)"
    last_node=$((node_port + n - 1))
    last_metrics=$((metrics_port + n - 1))
    cat <<EOF

  Cluster up: redis :$redis_port, $n gateway nodes (:$node_port..:$last_node), nginx on http://127.0.0.1:$lb_port/
  Logs and pids: $run

  Mint tokens (the cluster's secret is \$GATEWAY_JWT_SECRET, default the dev one):
    ALICE=\$($bin/sse-gateway mint-token --jwt-secret $secret --sub alice)
    WORKER=\$($bin/sse-gateway mint-token --jwt-secret $secret --sub worker --role publisher)
  Watch:    curl -N http://127.0.0.1:$lb_port/v1/users/me/events -H "Authorization: Bearer \$ALICE"
  Publish:  curl -X POST http://127.0.0.1:$lb_port/v1/jobs/j1/events -H "Authorization: Bearer \$WORKER" \\
              -d '{"owner":"alice","type":"progress","data":{"progress":10}}'
       or:  $bin/sse-publish --gateway http://127.0.0.1:$lb_port --token "\$WORKER" job j1 --owner alice stage --data '{"stage":"x"}'
  Metrics:  http://127.0.0.1:$metrics_port/metrics (node 1) .. :$last_metrics (node $n)
  Stop:     make cluster-down

EOF
}

down() {
    [ -e "$run/pids" ] || { echo "cluster.sh: nothing running"; return 0; }
    # Gateways first (SIGTERM: they drain), then nginx and redis.
    for kind in node nginx redis; do
        grep "^$kind" "$run/pids" | while read -r name pid; do
            if ours "$pid" "$(program_of "$name")"; then
                kill "$pid" 2>/dev/null || true
            fi
        done
    done
    while read -r name pid; do
        i=0
        while ours "$pid" "$(program_of "$name")" && [ $i -lt 100 ]; do
            sleep 0.1
            i=$((i + 1))
        done
        if ours "$pid" "$(program_of "$name")"; then
            echo "cluster.sh: $name ($pid) did not stop; killing"
            kill -9 "$pid" 2>/dev/null || true
        fi
    done < "$run/pids"
    rm -f "$run/pids"
    echo "cluster down"
}

status() {
    [ -e "$run/pids" ] || { echo "not running"; return 0; }
    while read -r name pid; do
        if ours "$pid" "$(program_of "$name")"; then echo "$name $pid running"; else echo "$name $pid gone"; fi
    done < "$run/pids"
}

case ${1:-} in
    up) shift; up "$@" ;;
    down) down ;;
    status) status ;;
    *) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
