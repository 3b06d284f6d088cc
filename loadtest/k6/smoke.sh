#!/usr/bin/env bash
# The k6 scripts, run unchanged through the stand-in (standin/run.mjs) against real
# gateways on ephemeral loopback ports, scaled down to hundreds of connections and seconds:
# every script against the embedded broker (with --jwt-issuer/--jwt-audience, so the tokens'
# iss/aud claims are exercised) and against Redis; topics.js with a `topics` claim on the
# first and plain tokens for a --public-topic on the second. Fails when a threshold fails. Then the
# negative cases, which must fail their threshold (exit 99): a gateway whose history is
# shorter than the resume gap (sse_resume_exact), a gateway refusing the streams (401,
# wrong secret) and a gateway that is not there (the connect thresholds).
#
# Part of `make test` (through loadtest/smoke.sh); runs alone too: loadtest/k6/smoke.sh.
# Installs Node and redis-server from Debian when missing. Stops only what it started.
set -euo pipefail
cd "$(dirname "$0")/../.."
CARGO=${CARGO:-cargo}

missing=
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
if [ -n "$missing" ]; then
    echo "installing:$missing"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing
fi

$CARGO build --locked -q -p sse-gateway
BIN=${CARGO_TARGET_DIR:-target}/debug
RUN=(node loadtest/k6/standin/run.mjs --require-samples)
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
SECRET=k6-smoke-only-secret-0123456789abcdefgh
ISSUER=k6-smoke
AUDIENCE=sse-gateway

echo "== k6 stand-in: unit and semantics tests"
node --test loadtest/k6/standin/test/units.test.mjs loadtest/k6/standin/test/standin.test.mjs \
    >"$WORK/node-test.log" 2>&1 || { cat "$WORK/node-test.log"; exit 1; }
tail -n 8 "$WORK/node-test.log" | grep -E '^# (pass|fail)'

free_port() {
    node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}
wait_for() { # what command...
    local what=$1
    shift
    for _ in $(seq 200); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "$what did not come up" >&2
    return 1
}
gateway() { # name extra-args... ; sets ADDR to the bound address. Not for $(…): the PID
    local name=$1 # must be recorded in this shell for cleanup to stop the gateway.
    shift
    "$BIN/sse-gateway" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --jwt-secret "$SECRET" \
        --log-format json "$@" >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
    wait_for "gateway $name" grep -q '"addr":"127\.0\.0\.1:[0-9]*"' "$WORK/$name.log"
    ADDR=$(grep -o '"addr":"127\.0\.0\.1:[0-9]*"' "$WORK/$name.log" | head -1 | grep -o '127\.0\.0\.1:[0-9]*')
}

REDIS_PORT=$(free_port)
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
wait_for redis redis-cli -p "$REDIS_PORT" ping

gateway memory --jwt-issuer "$ISSUER" --jwt-audience "$AUDIENCE"
GW_MEM=$ADDR
gateway redis --redis-url "redis://127.0.0.1:$REDIS_PORT" --public-topic 'top-topic-*'
GW_REDIS=$ADDR
ready() { # address: exits 0 once /readyz answers 200
    node -e 'require("http").get(`http://${process.argv[1]}/readyz`, (r) => process.exit(r.statusCode === 200 ? 0 : 1)).on("error", () => process.exit(1))' "$1"
}
wait_for "redis gateway readiness" ready "$GW_REDIS"

# Scaled down: ~470 opens at up to 150/s; 200 subscribers × 150 events; 120 resumes;
# 100 topic subscribers × 20 events each.
RAMP=(-e PEAK_RATE=150 -e START_RATE=20 -e RAMP=2s -e PLATEAU=2s -e PRE_VUS=20 -e MAX_VUS=60 -e JOBS=20)
FANOUT=(-e SUBSCRIBERS=200 -e JOBS=20 -e PUBLISH_RATE=50 -e DURATION=3s -e PUBLISH_AFTER=3s -e DRAIN=1s
    -e PUBLISHER_VUS=20)
RESUME=(-e VUS=60 -e ITERATIONS=2 -e EVENTS_BEFORE=3 -e EVENTS_MISSED=20)
TOPICS=(-e SUBSCRIBERS=100 -e TOPICS=2 -e PUBLISH_RATE=20 -e DURATION=2s -e PUBLISH_AFTER=2s -e DRAIN=1s
    -e PUBLISHER_VUS=3)

for broker in memory redis; do
    if [ $broker = memory ]; then
        TARGET=(-e "BASE_URL=http://$GW_MEM" -e "JWT_SECRET=$SECRET" -e "JWT_ISSUER=$ISSUER" -e "JWT_AUDIENCE=$AUDIENCE")
        AUTH=claim
    else
        TARGET=(-e "BASE_URL=http://$GW_REDIS" -e "JWT_SECRET=$SECRET")
        AUTH=token
    fi
    echo "== k6 connect-ramp.js ($broker broker)"
    "${RUN[@]}" "${TARGET[@]}" "${RAMP[@]}" -e PREFIX=ramp loadtest/k6/connect-ramp.js
    echo "== k6 fanout.js ($broker broker)"
    "${RUN[@]}" "${TARGET[@]}" "${FANOUT[@]}" -e PREFIX=fan loadtest/k6/fanout.js
    echo "== k6 resume.js ($broker broker)"
    "${RUN[@]}" "${TARGET[@]}" "${RESUME[@]}" -e PREFIX=res loadtest/k6/resume.js
    echo "== k6 topics.js ($broker broker, AUTH=$AUTH)"
    "${RUN[@]}" "${TARGET[@]}" "${TOPICS[@]}" -e AUTH=$AUTH -e PREFIX=top loadtest/k6/topics.js
done

# A refused stream must fail the connect thresholds: the scripts learn it only from the
# status sse.open returns. CREATE_JOBS=0: with the wrong secret, publishing would fail the
# setup before any stream is opened.
expect_connect_failure() { # label reason env...
    local label=$1 reason=$2
    shift 2
    echo "== k6 connect-ramp.js against $label: the connect thresholds must fail"
    local code=0
    "${RUN[@]}" --summary-json "$WORK/$reason.json" "$@" -e CREATE_JOBS=0 -e PEAK_RATE=50 -e START_RATE=50 \
        -e RAMP=1s -e PLATEAU=1s -e PRE_VUS=10 -e JOBS=20 -e PREFIX=ramp loadtest/k6/connect-ramp.js \
        >"$WORK/$reason.out" 2>&1 || code=$?
    tail -n 1 "$WORK/$reason.out"
    node -e '
        const [file, code, reason] = process.argv.slice(1);
        const s = JSON.parse(require("fs").readFileSync(file, "utf8"));
        const failed = s.thresholds.filter((t) => !t.ok).map((t) => t.metric);
        const errors = s.metrics.sse_connect_errors?.byTag?.reason?.[reason]?.count || 0;
        const success = s.metrics.sse_connect_success?.values?.passes ?? -1;
        if (code !== "99" || !failed.includes("sse_connect_success") || errors === 0 || success !== 0) {
            console.error(`expected exit 99, sse_connect_success failed and only ${reason} errors; got exit ${code}, failed [${failed}], ${errors} ${reason}, ${success} successes`);
            process.exit(1);
        }
        console.log(`ok: exit 99, ${errors} × ${reason}, thresholds failed: ${[...new Set(failed)].join(", ")}`);
    ' "$WORK/$reason.json" "$code" "$reason" || { cat "$WORK/$reason.out"; exit 1; }
}
# The resume check must be able to fail: a gateway keeping 10 events per job cannot replay
# a 30-event gap, and answers with a resync snapshot instead.
echo "== k6 resume.js against a gateway whose history is shorter than the gap: sse_resume_exact must fail"
gateway short-history --job-stream-maxlen 10
GW_SHORT=$ADDR
code=0
"${RUN[@]}" --summary-json "$WORK/short.json" -e "BASE_URL=http://$GW_SHORT" -e "JWT_SECRET=$SECRET" \
    -e VUS=5 -e EVENTS_BEFORE=2 -e EVENTS_MISSED=30 -e PREFIX=res loadtest/k6/resume.js >"$WORK/short.out" 2>&1 || code=$?
tail -n 1 "$WORK/short.out"
node -e '
    const [file, code] = process.argv.slice(1);
    const s = JSON.parse(require("fs").readFileSync(file, "utf8"));
    const failed = [...new Set(s.thresholds.filter((t) => !t.ok).map((t) => t.metric))];
    // (sse_resume_replay_time has no sample then, which --require-samples fails too.)
    const connectOk = !failed.some((m) => m.startsWith("sse_connect"));
    if (code !== "99" || !failed.includes("sse_resume_exact") || !connectOk || s.metrics.sse_resume_exact.values.passes !== 0) {
        console.error(`expected exit 99, sse_resume_exact failed, every resume inexact, connections fine; got exit ${code}, failed [${failed}]`);
        process.exit(1);
    }
    console.log(`ok: exit 99, ${s.metrics.sse_resume_exact.values.fails} inexact resumes, thresholds failed: ${failed}`);
' "$WORK/short.json" "$code" || { cat "$WORK/short.out"; exit 1; }

expect_connect_failure "a gateway refusing the token (401)" http_401 \
    -e "BASE_URL=http://$GW_MEM" -e JWT_SECRET=another-secret-0123456789abcdefghijkl
expect_connect_failure "a gateway that is down" connect_error \
    -e "BASE_URL=http://127.0.0.1:$(free_port)" -e "JWT_SECRET=$SECRET"
echo "k6 scripts: ok"
