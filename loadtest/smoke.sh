#!/usr/bin/env bash
# Smoke test of the load generator and the k6 scripts, for `make test` (about a minute
# once built): a gateway on the embedded broker, one on Redis (for topics published through
# the SDK's Redis transport, as `make bench` does) and the floor server on ephemeral
# loopback ports, a few short bounded sse-load runs that must be clean (every connection,
# every event once and in order, every topic id above the one before), then every k6
# script run through the stand-in against the embedded broker and Redis (k6/smoke.sh).
# Installs redis-server from Debian when missing. Stops only what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}

missing=
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
command -v python3 >/dev/null 2>&1 || missing="$missing python3"
if [ -n "$missing" ]; then
    echo "installing:$missing"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing
fi
$CARGO build --locked -q -p sse-gateway -p sse-loadtest
BIN=target/debug
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
SECRET=smoke-only-secret-0123456789abcdefghij

# Gateway on ephemeral ports: its JSON start-up line names them.
"$BIN/sse-gateway" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --jwt-secret "$SECRET" \
    --max-connections-per-user 1000 --public-topic 'st*' --log-format json >"$WORK/gateway.log" 2>&1 &
PIDS+=($!)
REDIS_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
"$BIN/sse-gateway" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --jwt-secret "$SECRET" \
    --redis-url "redis://127.0.0.1:$REDIS_PORT" --redis-prefix smoke: --public-topic 'st*' \
    --log-format json >"$WORK/gateway-redis.log" 2>&1 &
PIDS+=($!)
"$BIN/sse-floor" --listen 127.0.0.1:0 >"$WORK/floor.log" 2>&1 &
PIDS+=($!)
addr() { # file pattern
    for _ in $(seq 100); do
        a=$(grep -o "$2" "$1" | head -1 | grep -o '127\.0\.0\.1:[0-9]*' || true)
        [ -n "$a" ] && { echo "$a"; return; }
        sleep 0.05
    done
    echo "no address in $1" >&2; cat "$1" >&2; exit 1
}
GW=$(addr "$WORK/gateway.log" '"addr":"127\.0\.0\.1:[0-9]*"')
GW_REDIS=$(addr "$WORK/gateway-redis.log" '"addr":"127\.0\.0\.1:[0-9]*"')
FLOOR=$(addr "$WORK/floor.log" 'listening on 127\.0\.0\.1:[0-9]*')
LOAD=("$BIN/sse-load" --jwt-secret "$SECRET" --assert-clean --max-duration 20s)

echo "== broadcast: 200 subscribers, 20 events (gateway, HTTP publish)"
"${LOAD[@]}" --url "http://$GW" --topics 1 --connections 200 --publish http --events 20 --rate 200 --topic-prefix sb
echo "== many jobs: 100 jobs, 300 events (gateway, SDK HTTP publish, query token)"
"${LOAD[@]}" --url "http://$GW" --topics 100 --connections 100 --publish sdk-http --events 300 --rate 1000 --auth query --topic-prefix sm
echo "== resume: 50 clients replay 99 events each"
"${LOAD[@]}" --url "http://$GW" --topics 1 --connections 50 --publish http --resume-history 100 --topic-prefix sr
echo "== connect storm: 500 user streams from 2 source addresses"
"${LOAD[@]}" --url "http://$GW" --stream user --topics 50 --connections 500 --storm --source-addrs 127.0.0.2,127.0.0.3 --topic-prefix ss
echo "== topics: 300 subscribers of 2 public topics, 40 events (gateway, SDK HTTP publish)"
"${LOAD[@]}" --url "http://$GW" --stream topic --topics 2 --connections 300 --publish sdk-http --events 40 --rate 400 --topic-prefix stp
echo "== topic resume: 50 clients replay 29 events each (gateway, HTTP publish)"
"${LOAD[@]}" --url "http://$GW" --stream topic --topics 1 --connections 50 --publish http --resume-history 30 --topic-prefix str
echo "== topics on Redis: 300 subscribers of 1 topic, 40 events (SDK Redis publish, as make bench)"
python3 - "$GW_REDIS" <<'PY'
import sys, time, urllib.request
for _ in range(200):
    try:
        if urllib.request.urlopen(f"http://{sys.argv[1]}/readyz", timeout=1).status == 200:
            sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit("the Redis gateway did not become ready")
PY
"${LOAD[@]}" --url "http://$GW_REDIS" --stream topic --topics 1 --connections 300 --publish sdk-redis \
    --redis-url "redis://127.0.0.1:$REDIS_PORT" --redis-prefix smoke: --events 40 --rate 400 --topic-prefix stq
echo "== floor: 200 subscribers, 20 events"
"${LOAD[@]}" --target floor --url "http://$FLOOR" --topics 1 --connections 200 --publish http --events 20 --rate 200

loadtest/k6/smoke.sh
echo "loadtest smoke: ok"
