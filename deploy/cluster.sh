#!/bin/sh
# A local cluster on loopback: one redis-server (AOF on), N gateway nodes and nginx as the
# load balancer in front of them, all run from target/cluster/ and stopped by PID.
#
#   deploy/cluster.sh up [N]     start (default N=3); prints the URLs and how to use them
#   deploy/cluster.sh down       stop exactly what `up` started
#   deploy/cluster.sh status     what is running
#
# Ports: nginx 127.0.0.1:8080 (LB_PORT), redis 6390 (REDIS_PORT), node i on 8081+i-1 with
# metrics on 9091+i-1. Binaries: target/release (built by `make cluster`).
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
run=${CLUSTER_DIR:-$top/target/cluster}
bin=${BIN_DIR:-$top/target/release}
lb_port=${LB_PORT:-8080}
redis_port=${REDIS_PORT:-6390}
secret=${GATEWAY_JWT_SECRET:-dev-only-secret-change-me-0123456789}

die() { echo "cluster.sh: $*" >&2; exit 1; }

wait_http() { # url, seconds
    i=0
    while [ $i -lt $(($2 * 10)) ]; do
        code=$(curl -s -o /dev/null -w '%{http_code}' "$1" 2>/dev/null || true)
        [ "$code" = 200 ] && return 0
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}

up() {
    n=${1:-3}
    [ -x "$bin/sse-gateway" ] || die "no $bin/sse-gateway: run 'make cluster' (it builds first)"
    command -v redis-server >/dev/null || die "redis-server is missing (apt-get install redis-server)"
    command -v nginx >/dev/null || die "nginx is missing (apt-get install nginx)"
    [ ! -e "$run/pids" ] || die "already running (see $run); 'deploy/cluster.sh down' first"
    mkdir -p "$run/redis"
    : > "$run/pids"
    redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$run/redis" --appendonly yes \
        --save '' --daemonize no > "$run/redis.log" 2>&1 &
    echo "redis $!" >> "$run/pids"
    ports=
    i=1
    while [ $i -le "$n" ]; do
        port=$((8080 + i))
        metrics=$((9090 + i))
        GATEWAY_JWT_SECRET=$secret "$bin/sse-gateway" --listen "127.0.0.1:$port" \
            --metrics-listen "127.0.0.1:$metrics" --redis-url "redis://127.0.0.1:$redis_port" \
            --log-format json > "$run/node$i.log" 2>&1 &
        echo "node$i $!" >> "$run/pids"
        ports="$ports $port"
        i=$((i + 1))
    done
    # shellcheck disable=SC2086 # the ports are separate arguments
    "$top/deploy/nginx/render.sh" --listen "127.0.0.1:$lb_port" --run-dir "$run/nginx" \
        "$run/nginx/nginx.conf" $ports
    nginx -p "$run/nginx" -c "$run/nginx/nginx.conf" -e "$run/nginx/error.log" \
        > "$run/nginx.log" 2>&1 &
    echo "nginx $!" >> "$run/pids"
    for port in $ports; do
        wait_http "http://127.0.0.1:$port/readyz" 20 || die "node on :$port is not ready (see $run/*.log)"
    done
    wait_http "http://127.0.0.1:$lb_port/readyz" 10 || die "nginx on :$lb_port does not answer (see $run/nginx)"
    cat <<EOF

  Cluster up: redis :$redis_port, $n gateway nodes (:8081..), nginx on http://127.0.0.1:$lb_port/
  Logs and pids: $run

  Mint tokens (the cluster's secret is \$GATEWAY_JWT_SECRET, default the dev one):
    $bin/sse-gateway mint-token --jwt-secret $secret --sub alice
    $bin/sse-gateway mint-token --jwt-secret $secret --sub worker --role publisher
  Watch:    curl -N http://127.0.0.1:$lb_port/v1/users/me/events -H "Authorization: Bearer \$ALICE"
  Publish:  curl -X POST http://127.0.0.1:$lb_port/v1/jobs/j1/events -H "Authorization: Bearer \$WORKER" \\
              -d '{"owner":"alice","type":"progress","data":{"progress":10}}'
       or:  $bin/sse-publish --gateway http://127.0.0.1:$lb_port --token "\$WORKER" job j1 --owner alice stage --data '{"stage":"x"}'
  Metrics:  http://127.0.0.1:9091/metrics (node 1), :9092 (node 2), ...
  Stop:     make cluster-down

EOF
}

down() {
    [ -e "$run/pids" ] || { echo "cluster.sh: nothing running"; return 0; }
    # Gateways first (SIGTERM: they drain), then nginx and redis.
    for name in node nginx redis; do
        grep "^$name" "$run/pids" | while read -r _ pid; do
            kill "$pid" 2>/dev/null || true
        done
    done
    while read -r name pid; do
        i=0
        while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
        kill -0 "$pid" 2>/dev/null && { echo "cluster.sh: $name ($pid) did not stop; killing"; kill -9 "$pid"; }
    done < "$run/pids"
    rm -f "$run/pids"
    echo "cluster down"
}

status() {
    [ -e "$run/pids" ] || { echo "not running"; return 0; }
    while read -r name pid; do
        if kill -0 "$pid" 2>/dev/null; then echo "$name $pid running"; else echo "$name $pid gone"; fi
    done < "$run/pids"
}

case ${1:-} in
    up) shift; up "$@" ;;
    down) down ;;
    status) status ;;
    *) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
