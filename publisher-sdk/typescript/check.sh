#!/bin/sh
# The TypeScript publisher SDK (@sse-gateway/publisher), as `make test` and `make lint`
# check it:
#
#   publisher-sdk/typescript/check.sh          install, build, test
#   publisher-sdk/typescript/check.sh lint     strict type-check and ESLint
#   publisher-sdk/typescript/check.sh build    install and build, each only when out of date
#                                              (for other suites that run the built package)
#
# 1. installs what is missing, from Debian only, as root: Node.js >= 18 and npm, and (for
#    the tests) redis-server and redis-tools;
# 2. `npm ci` here, from the committed package-lock.json, into ./node_modules;
# 3. lint: `tsc --noEmit` over src/ (strict) and over examples/ (checkJs), then ESLint
#    (typescript-eslint's type-checked rules: no floating or misused promises);
# 4. test: builds the package (lua/ copied from publisher-sdk/wire/lua, dist/ by tsc: ES
#    modules and .d.ts), builds the gateway (`cargo build -p sse-gateway`, debug, unless
#    SSE_BIN_DIR names a directory holding an sse-gateway binary), and runs the tests with
#    Node's test runner against real redis-server processes and real gateways.
set -eu
cd "$(dirname "$0")"
here=$(pwd)
repo=$(cd ../.. && pwd)
mode=${1:-test}
case $mode in
    test | lint | build) ;;
    *) echo "usage: $0 [test|lint|build]" >&2; exit 64 ;;
esac

missing=
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
[ "$node_major" -ge 18 ] || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"
if [ "$mode" = test ]; then
    command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
    command -v redis-cli >/dev/null 2>&1 || missing="$missing redis-tools"
fi
if [ -n "$missing" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "check.sh: missing:$missing (install them, or run as root)" >&2
        exit 1
    fi
    echo "installing:$missing"
    apt-get update -qq
    # shellcheck disable=SC2086 # one word per package
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
fi

if [ "$mode" = build ]; then
    # npm ci when package-lock.json changed since the last install (npm writes
    # node_modules/.package-lock.json), the build when a source changed since dist/.
    if [ ! -f node_modules/.package-lock.json ] \
        || [ -n "$(find package-lock.json -newer node_modules/.package-lock.json)" ]; then
        npm ci --no-audit --no-fund --loglevel=error
    fi
    if [ ! -f dist/index.js ] || [ ! -d lua ] \
        || [ -n "$(find src ../wire/lua package.json package-lock.json tsconfig.json scripts -newer dist/index.js -print | head -n 1)" ]; then
        node scripts/build.mjs
    fi
    exit 0
fi

npm ci --no-audit --no-fund --loglevel=error

if [ "$mode" = lint ]; then
    tsc="node node_modules/typescript/bin/tsc"
    $tsc -p tsconfig.json --noEmit
    $tsc -p tsconfig.examples.json
    node node_modules/eslint/bin/eslint.js --max-warnings 0
    echo "check.sh lint: sources and example type-check (strict); ESLint clean"
    exit 0
fi

node scripts/build.mjs
if [ -z "${SSE_BIN_DIR:-}" ]; then
    (cd "$repo" && cargo build --locked -q -p sse-gateway)
    SSE_BIN_DIR=${CARGO_TARGET_DIR:-$repo/target}/debug
fi
export SSE_BIN_DIR
exec node --test test/
