#!/bin/sh
# Renders deploy/nginx/nginx.conf.template into a self-contained nginx config for a local
# cluster of gateway nodes listening on 127.0.0.1:PORT each.
#
#   deploy/nginx/render.sh [--listen ADDR] [--run-dir DIR] [--worker-connections N] \
#       OUTPUT PORT [PORT...]
#
#   OUTPUT                  the config file to write (its directory is created)
#   PORT...                 the gateway nodes' HTTP ports on 127.0.0.1
#   --listen ADDR           where nginx listens (default 127.0.0.1:8080)
#   --run-dir DIR           pid, logs and temp files (default: OUTPUT's directory)
#   --worker-connections N  per worker (default 16384; each stream takes two)
#
# Then, as any user (absolute paths; -c is relative to -p otherwise):
#   nginx -p DIR -c OUTPUT -e DIR/error.log
# (`-e` keeps nginx from opening the system error log before it reads the config.)
set -eu

here=$(cd "$(dirname "$0")" && pwd)
usage() {
    sed -n '5,16p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

listen=127.0.0.1:8080
run_dir=
worker_connections=16384
while [ $# -gt 0 ]; do
    case $1 in
        --listen) [ $# -ge 2 ] || usage; listen=$2; shift 2 ;;
        --run-dir) [ $# -ge 2 ] || usage; run_dir=$2; shift 2 ;;
        --worker-connections) [ $# -ge 2 ] || usage; worker_connections=$2; shift 2 ;;
        -h | --help) usage ;;
        --) shift; break ;;
        -*) echo "render.sh: unknown option $1" >&2; usage ;;
        *) break ;;
    esac
done
[ $# -ge 2 ] || usage
output=$1
shift

case $worker_connections in
    '' | *[!0-9]*) echo "render.sh: --worker-connections must be a number" >&2; exit 2 ;;
esac
servers=
for port in "$@"; do
    case $port in
        '' | *[!0-9]*) echo "render.sh: not a port: $port" >&2; exit 2 ;;
    esac
    if [ "$port" -lt 1 ] || [ "$port" -gt 65535 ]; then
        echo "render.sh: not a port: $port" >&2
        exit 2
    fi
    # No passive health marking (max_fails=0): after fail_timeout nginx lets a failed
    # server take one probe request and clears the failure only when that request
    # completes -- an SSE stream never does, so a recovered node would stay half-open and
    # a rolling restart ends in "no live upstreams" (502, final for EventSource). Each
    # request still moves on to the next node on a refusal or a draining node's 503
    # (proxy_next_upstream in sse-proxy.conf), and proxy_connect_timeout keeps a dead
    # host cheap to skip.
    servers="${servers}        server 127.0.0.1:${port} max_fails=0;
"
done

mkdir -p "$(dirname "$output")"
output_dir=$(cd "$(dirname "$output")" && pwd)
if [ -z "$run_dir" ]; then
    run_dir=$output_dir
fi
mkdir -p "$run_dir"
run_dir=$(cd "$run_dir" && pwd)

# Indent the shared SSE settings into the location block.
sse_proxy=$(sed -e 's/^\(.\)/            \1/' "$here/sse-proxy.conf")

# Two descriptors per stream, plus some; not above the hard limit, which an ordinary user
# cannot raise (nginx would log an alert and keep the old limit).
nofile=$((worker_connections * 2 + 128))
# shellcheck disable=SC3045 # -H is not POSIX, but dash, bash and busybox sh have it.
hard=$(ulimit -H -n 2>/dev/null || echo unlimited)
if [ "$hard" != unlimited ] && [ "$nofile" -gt "$hard" ]; then
    nofile=$hard
fi

tmp="$output.tmp.$$"
trap 'rm -f "$tmp"' EXIT
SERVERS=$servers SSE_PROXY=$sse_proxy awk \
    -v run_dir="$run_dir" \
    -v listen="$listen" \
    -v wc="$worker_connections" \
    -v nofile="$nofile" '
    $0 == "@UPSTREAM_SERVERS@" { printf "%s", ENVIRON["SERVERS"]; next }
    $0 == "@SSE_PROXY@" { print ENVIRON["SSE_PROXY"]; next }
    {
        gsub(/@RUN_DIR@/, run_dir)
        gsub(/@LISTEN@/, listen)
        gsub(/@WORKER_CONNECTIONS@/, wc)
        gsub(/@WORKER_RLIMIT_NOFILE@/, nofile)
        print
    }' "$here/nginx.conf.template" >"$tmp"
mv "$tmp" "$output"
trap - EXIT
