#!/bin/sh
# Demo publisher for deploy/compose.yaml: publishes fake encoding jobs for one user,
# forever, through the load balancer with `sse-publish` (HTTP transport), so that every
# event goes gateway -> Redis -> whichever gateway holds the watching browser.
#
# It signs its own short-lived publisher token with the gateways' shared HMAC secret
# (`sse-gateway mint-token`), so it needs GATEWAY_JWT_SECRET, like the gateways.
#
# Environment:
#   GATEWAY_JWT_SECRET  required; the secret the gateways verify tokens with
#   SSE_GATEWAY_URL     where to publish (default http://nginx:8080)
#   DEMO_OWNER          the user who owns the jobs and may watch them (default demo)
#   DEMO_STEP_SECONDS   pause between two events of a job (default 1)
set -u

: "${GATEWAY_JWT_SECRET:?set GATEWAY_JWT_SECRET to the secret the gateways share}"
SSE_GATEWAY_URL="${SSE_GATEWAY_URL:-http://nginx:8080}"
export SSE_GATEWAY_URL
owner="${DEMO_OWNER:-demo}"
step="${DEMO_STEP_SECONDS:-1}"

log() { printf '%s demo-publisher: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }

# publish JOB TYPE DATA: one event; a failure is logged and the loop goes on (the
# gateways may still be starting, or one may be draining).
publish() {
    if id=$(sse-publish job "$1" --owner "$owner" "$2" --data "$3"); then
        log "$1 $2 -> $id"
    else
        log "$1 $2 not published (exit $?); retrying with the next event"
    fi
}

number=0
while :; do
    number=$((number + 1))
    # A fresh token per job: the minted token expires after --ttl.
    if ! SSE_PUBLISH_TOKEN=$(sse-gateway mint-token --sub demo-publisher --role publisher --ttl 10m); then
        log "cannot mint a publisher token; is GATEWAY_JWT_SECRET at least 32 bytes?"
        exit 64
    fi
    export SSE_PUBLISH_TOKEN
    job="encode-$(date +%s)-$number"
    publish "$job" stage '{"stage":"Queued","message":"waiting for a worker"}'
    for progress in 10 25 40 55 70 85; do
        sleep "$step"
        publish "$job" progress "{\"progress\":$progress,\"stage\":\"Encoding\"}"
    done
    sleep "$step"
    if [ $((number % 5)) -eq 0 ]; then
        publish "$job" failed '{"error":"encoder ran out of disk space"}'
    else
        publish "$job" complete "{\"result\":{\"outputPath\":\"out-$number.mp4\"}}"
    fi
    sleep "$step"
done
