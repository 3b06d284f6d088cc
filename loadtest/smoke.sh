#!/usr/bin/env bash
# Smoke test of the load generator and the k6 scripts, for `make test` (about a minute
# once built): a gateway on the embedded broker and the floor server on ephemeral loopback
# ports, a few short bounded sse-load runs that must be clean (every connection, every
# event once and in order), then every k6 script run through the stand-in against the
# embedded broker and Redis (k6/smoke.sh, which installs Node and redis-server if missing).
# Stops only what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}

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
    --max-connections-per-user 1000 --log-format json >"$WORK/gateway.log" 2>&1 &
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
echo "== floor: 200 subscribers, 20 events"
"${LOAD[@]}" --target floor --url "http://$FLOOR" --topics 1 --connections 200 --publish http --events 20 --rate 200

loadtest/k6/smoke.sh
echo "loadtest smoke: ok"
