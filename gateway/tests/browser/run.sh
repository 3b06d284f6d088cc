#!/bin/sh
# Real-browser end-to-end tests of the dashboard and of the client package's bundle:
# headless Debian Chromium (through playwright-core) against real gateway processes, Redis
# and nginx. One command does everything, on a fresh Debian machine as root:
#
#   gateway/tests/browser/run.sh [node --test arguments, e.g. --test-name-pattern=cookie]
#
# 1. installs what is missing, from Debian only (apt-get update at most once): chromium,
#    redis-server, nginx, nodejs/npm, openssl (tls.test.js makes its certificate);
# 2. builds the gateway, the publisher CLI and the Rust SDK's log_worker example (debug,
#    like `cargo test`), and readies the other two SDKs for workers.test.js: the Python
#    package installed into publisher-sdk/python/.venv (its check.sh setup), the TypeScript
#    package built into publisher-sdk/typescript/dist (its check.sh build); each step
#    does nothing when what it makes is up to date;
# 3. `npm ci` here (playwright-core from the npm registry; no browser download: the tests
#    drive /usr/bin/chromium);
# 4. runs the tests with Node's own runner, whose closing summary (`# pass`, `# fail`)
#    is the result. Logs of every process go to artifacts/browser-tests/, screenshots to
#    artifacts/ (both git-ignored).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
cd "$repo"

# ---- 1. system packages ----------------------------------------------------------------------
missing=
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$missing nginx"
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 18 ]; then
    missing="$missing nodejs"
fi
command -v npm >/dev/null 2>&1 || missing="$missing npm"
command -v openssl >/dev/null 2>&1 || missing="$missing openssl"
if [ -n "$missing" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "run.sh: missing:$missing (install them, or run as root)" >&2
        exit 1
    fi
    echo "installing:$missing"
    apt-get update -qq
    # shellcheck disable=SC2086 # one word per package
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
fi
PATH=$PATH:/usr/sbin
export PATH

# ---- 2. the binaries under test -------------------------------------------------------------
cargo build --locked -p sse-gateway -p sse-publisher
# Apart: an example builds with the dev-dependencies, whose features must not change the
# gateway's build above.
cargo build --locked -p sse-publisher --example log_worker
SSE_BIN_DIR=${CARGO_TARGET_DIR:-$repo/target}/debug
export SSE_BIN_DIR
publisher-sdk/python/check.sh setup
publisher-sdk/typescript/check.sh build

# ---- 3. the test dependencies ---------------------------------------------------------------
cd "$here"
npm ci --no-audit --no-fund --loglevel=error

# ---- 4. the tests ---------------------------------------------------------------------------
mkdir -p "$repo/artifacts"
exec node --test "$@" client.test.js cluster.test.js cors.test.js dashboard.test.js tls.test.js topics.test.js workers.test.js
